from django.contrib import admin
from django.urls import include, path
from django.views.generic import TemplateView
from drf_spectacular.views import SpectacularSwaggerView

urlpatterns = [
    path("", TemplateView.as_view(template_name="demo/home.html"), name="home"),
    path("receiver/", include("demo_project.receiver.urls")),
    path("admin/", admin.site.urls),
    path("api/", include("webhooks_app.api.urls")),
    # Swagger UI for the API's schema, its files served locally (drf-spectacular-sidecar).
    path(
        "api/docs/",
        SpectacularSwaggerView.as_view(url_name="webhooks_api:schema"),
        name="api-docs",
    ),
]
