from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView

urlpatterns = [
    path("", TemplateView.as_view(template_name="demo/home.html"), name="home"),
    path("receiver/", include("demo_project.receiver.urls")),
    path("admin/", admin.site.urls),
]
