"""The API's viewsets: thin, every verb goes through ``webhooks_app.operations``.

Authentication is the host project's (``REST_FRAMEWORK["DEFAULT_AUTHENTICATION_CLASSES"]``).
Visibility is decided in ``get_queryset``: staff see everything; an owner sees their own
webhooks and what was delivered to them, and anything else is a 404.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.db.models import Exists, OuterRef, QuerySet
from django_filters.rest_framework import DjangoFilterBackend
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, pagination, status, throttling, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.generics import get_object_or_404
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.serializers import BaseSerializer

from webhooks_app import operations, registry, targets
from webhooks_app.api import history
from webhooks_app.api.filters import DeliveryFilter, EventFilter
from webhooks_app.api.permissions import CanUseWebhooksAPI, SettingsEndpointsReadOnly, is_manager
from webhooks_app.api.serializers import (
    EnableSerializer,
    QueuedSerializer,
    RecoverSerializer,
    RotateSecretResultSerializer,
    RotateSecretSerializer,
    TestResultSerializer,
    TestSendSerializer,
    WebhookSerializer,
)
from webhooks_app.conf import app_settings
from webhooks_app.models import Delivery, Event, Webhook

# Ids that fit a 64-bit column: a longer number is a 404 from the URL resolver instead of an
# overflow in the database driver.
ID_PATTERN = "[0-9]{1,18}"


class WebhookPagination(pagination.PageNumberPagination):
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class NewestFirstPagination(pagination.CursorPagination):
    """Cursor pagination: stable and index-backed on tables of millions of rows."""

    ordering: tuple[str, ...] = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200


class EventPagination(NewestFirstPagination):
    ordering = ("-created_at",)


class TestSendThrottle(throttling.UserRateThrottle):
    """Test sends per user; the rate is ``WEBHOOKS["TEST_THROTTLE_RATE"]`` (None = off)."""

    scope = "webhooks_test"

    def get_rate(self) -> str | None:
        rate = app_settings.TEST_THROTTLE_RATE
        return str(rate) if rate else None


def _visible(queryset: QuerySet[Any], request: Request, owner_lookup: str) -> QuerySet[Any]:
    """All rows for staff; for anyone else only those whose webhook they own."""
    user = request.user
    if is_manager(user):
        return queryset
    if not user.is_authenticated:  # the schema generator asks as nobody
        return queryset.none()
    return queryset.filter(**{owner_lookup: user})


def _visible_deliveries(request: Request) -> QuerySet[Delivery]:
    return _visible(Delivery.objects.all(), request, "webhook__owner")


def _operation_failed(exc: operations.OperationError) -> ValidationError:
    return ValidationError({"detail": str(exc)})


class WebhookViewSet(viewsets.ModelViewSet[Webhook]):
    queryset = Webhook.objects.all()  # for the schema; get_queryset() decides
    serializer_class = WebhookSerializer
    lookup_value_regex = ID_PATTERN
    permission_classes = [CanUseWebhooksAPI, SettingsEndpointsReadOnly]
    pagination_class = WebhookPagination

    def get_queryset(self) -> QuerySet[Webhook]:
        # held_back_since reads the webhook's hold: joined, so a page is still one query.
        webhooks = Webhook.objects.select_related("held_fanout").order_by("-created_at", "-id")
        return _visible(webhooks, self.request, "owner")

    def get_serializer_context(self) -> dict[str, Any]:
        # The secret is shown in full once: in the response to the request that created it.
        return {**super().get_serializer_context(), "reveal_secret": self.action == "create"}

    def get_throttles(self) -> list[throttling.BaseThrottle]:
        throttles = list(super().get_throttles())
        if self.action == "send_test":
            throttles.append(TestSendThrottle())
        return throttles

    def perform_create(self, serializer: BaseSerializer[Webhook]) -> None:
        serializer.save(owner=self.request.user)

    def perform_update(self, serializer: BaseSerializer[Webhook]) -> None:
        # Turning is_active on or off is enabling or disabling, as in the admin: the reason,
        # the time and the failure count follow (and enable/ also resends what was skipped).
        webhook = serializer.instance
        assert isinstance(webhook, Webhook)
        was_active = webhook.is_active
        wants = serializer.validated_data.pop("is_active", was_active)
        serializer.save()
        if wants and not was_active:
            operations.enable(webhook)
        elif was_active and not wants:
            operations.disable(webhook, f"Disabled by {self.request.user} through the API.")

    @extend_schema(request=TestSendSerializer, responses=TestResultSerializer)
    @action(detail=True, methods=["post"], url_path="test")
    def send_test(self, request: Request, pk: str | None = None) -> Response:
        """Send a test event to this webhook now and return what the endpoint answered."""
        webhook = self.get_object()
        body = TestSendSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        if not webhook.managed_by_settings:
            # DNS may have changed since the URL was accepted, and this response shows the
            # endpoint's answer: check again right before sending.
            try:
                targets.check_target_url(webhook.url)
            except targets.TargetNotAllowed as exc:
                raise ValidationError({"url": [str(exc)]}) from None
        try:
            attempt = operations.send_test(
                webhook,
                event_name=body.validated_data["event"],
                data=body.validated_data["data"],
                user=request.user,
            )
        except operations.OperationError as exc:
            raise _operation_failed(exc) from None
        return Response(TestResultSerializer(attempt).data)

    @extend_schema(request=RotateSecretSerializer, responses=RotateSecretResultSerializer)
    @action(detail=True, methods=["post"], url_path="rotate-secret")
    def rotate_secret(self, request: Request, pk: str | None = None) -> Response:
        """Give the webhook a new secret (returned once); the old one signs too for a while."""
        webhook = self.get_object()
        body = RotateSecretSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        grace = datetime.timedelta(seconds=body.validated_data["grace_seconds"])
        try:
            secret = operations.rotate_secret(webhook, grace=grace)
        except operations.OperationError as exc:
            raise _operation_failed(exc) from None
        result = {
            "secret": secret,
            "previous_secret_expires_at": webhook.previous_secret_expires_at,
        }
        return Response(RotateSecretResultSerializer(result).data)

    @extend_schema(request=EnableSerializer, responses=QueuedSerializer)
    @action(detail=True, methods=["post"])
    def enable(self, request: Request, pk: str | None = None) -> Response:
        """Enable the webhook again; with ``resend_skipped``, also queue the deliveries
        skipped since it was disabled. Answers how many were queued."""
        webhook = self.get_object()
        body = EnableSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            queued = operations.enable(
                webhook, resend_skipped=body.validated_data["resend_skipped"]
            )
        except operations.OperationError as exc:
            raise _operation_failed(exc) from None
        return Response({"queued": queued})

    @extend_schema(request=RecoverSerializer, responses={202: QueuedSerializer})
    @action(detail=True, methods=["post"])
    def recover(self, request: Request, pk: str | None = None) -> Response:
        """Queue every failed delivery of this webhook created in [since, until) again."""
        webhook = self.get_object()
        body = RecoverSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        try:
            queued = operations.recover(
                webhook, body.validated_data["since"], body.validated_data["until"]
            )
        except operations.OperationError as exc:
            raise _operation_failed(exc) from None
        return Response({"queued": queued}, status=status.HTTP_202_ACCEPTED)


class DeliveryViewSet(viewsets.ReadOnlyModelViewSet[Delivery]):
    queryset = Delivery.objects.all()  # for the schema; get_queryset() decides
    lookup_value_regex = ID_PATTERN
    permission_classes = [CanUseWebhooksAPI]
    pagination_class = NewestFirstPagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = DeliveryFilter

    def get_queryset(self) -> QuerySet[Delivery]:
        rows = _visible_deliveries(self.request).select_related("event").defer("event__body")
        if self.action == "retrieve":
            rows = rows.prefetch_related("attempts_log")
        return rows

    def get_serializer_class(self) -> type[BaseSerializer[Delivery]]:
        if self.action == "retrieve":
            return history.DeliveryDetailSerializer
        return history.DeliverySerializer

    @extend_schema(request=None, responses={202: QueuedSerializer})
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, pk: str | None = None) -> Response:
        """Attempt this delivery again now (one more attempt if it had settled)."""
        row = self.get_object()
        queued = operations.retry_deliveries(Delivery.objects.filter(pk=row.pk))
        if not queued:
            return Response(
                {"detail": "A worker is attempting this delivery right now; try again later."},
                status=status.HTTP_409_CONFLICT,
            )
        return Response({"queued": queued}, status=status.HTTP_202_ACCEPTED)


class WebhookDeliveryViewSet(mixins.ListModelMixin, viewsets.GenericViewSet[Delivery]):
    """One webhook's deliveries (``webhooks/{id}/deliveries/``), newest first."""

    queryset = Delivery.objects.all()  # for the schema; get_queryset() decides
    serializer_class = history.DeliverySerializer
    permission_classes = [CanUseWebhooksAPI]
    pagination_class = NewestFirstPagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = DeliveryFilter

    def get_queryset(self) -> QuerySet[Delivery]:
        if getattr(self, "swagger_fake_view", False):
            return Delivery.objects.none()
        # Another owner's webhook is a 404, like every object the user may not see.
        webhook = get_object_or_404(
            _visible(Webhook.objects.all(), self.request, "owner"), pk=self.kwargs["webhook_pk"]
        )
        return Delivery.objects.filter(webhook=webhook).select_related("event").defer("event__body")


class EventViewSet(viewsets.ReadOnlyModelViewSet[Event]):
    queryset = Event.objects.all()  # for the schema; get_queryset() decides
    permission_classes = [CanUseWebhooksAPI]
    pagination_class = EventPagination
    filter_backends = [DjangoFilterBackend]
    filterset_class = EventFilter

    def get_queryset(self) -> QuerySet[Event]:
        events = Event.objects.all()
        if self.action != "retrieve":
            events = events.defer("body")
        if is_manager(self.request.user):
            return events
        # An owner sees the events that were delivered (or due) to one of their webhooks.
        mine = _visible_deliveries(self.request).filter(event=OuterRef("pk"))
        return events.filter(Exists(mine))

    def get_serializer_class(self) -> type[BaseSerializer[Event]]:
        if self.action == "retrieve":
            return history.EventDetailSerializer
        return history.EventSerializer

    def get_serializer_context(self) -> dict[str, Any]:
        context = dict(super().get_serializer_context())
        context["visible_deliveries"] = _visible_deliveries(self.request).select_related("event")
        return context


class EventTypeViewSet(mixins.ListModelMixin, viewsets.GenericViewSet[Any]):
    """The events this site can send, for choosing a webhook's ``events``."""

    permission_classes = [CanUseWebhooksAPI]
    serializer_class = history.EventTypeSerializer
    pagination_class = None

    def get_queryset(self) -> Any:
        catalogue = registry.event_catalogue()
        return [{"name": name, "description": text} for name, text in sorted(catalogue.items())]
