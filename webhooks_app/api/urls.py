"""``path("api/", include("webhooks_app.api.urls"))`` serves the API and its OpenAPI schema."""

from __future__ import annotations

from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView
from rest_framework.routers import DefaultRouter

from webhooks_app.api import views

router = DefaultRouter()
router.register("webhooks", views.WebhookViewSet, basename="webhook")
router.register(
    rf"webhooks/(?P<webhook_pk>{views.ID_PATTERN})/deliveries",
    views.WebhookDeliveryViewSet,
    basename="webhook-deliveries",
)
router.register("deliveries", views.DeliveryViewSet, basename="delivery")
router.register("events", views.EventViewSet, basename="event")
router.register("event-types", views.EventTypeViewSet, basename="event-type")

app_name = "webhooks_api"
urlpatterns = [
    path("", include(router.urls)),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
]
