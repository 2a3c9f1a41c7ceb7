from django.contrib import admin
from django.urls import include, path

from webhooks_app.metrics import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/", include("webhooks_app.api.urls")),
    path("metrics/", metrics_view),
]
