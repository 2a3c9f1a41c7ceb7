"""Models the suite watches: what a host project's own models look like to us."""

import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models


class Article(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft", "Draft"
        PUBLISHED = "published", "Published"

    uid = models.UUIDField(default=uuid.uuid4, editable=False)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    rating = models.FloatField(default=0.0)
    price = models.DecimalField(max_digits=10, decimal_places=2, default=Decimal("0.00"))
    attachment = models.FileField(upload_to="attachments/", blank=True)
    published_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return self.title


class Account(models.Model):
    """Has fields that must never leave the site by accident."""

    email = models.EmailField()
    password = models.CharField(max_length=128)
    api_token = models.CharField(max_length=64, blank=True)
    client_secret = models.CharField(max_length=64, blank=True)
    plan = models.CharField(max_length=20, default="free")
    preferences = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return self.email


class Invoice(models.Model):
    number = models.CharField(max_length=20)
    amount = models.DecimalField(max_digits=12, decimal_places=2)
    issued_on = models.DateField()
    internal_note = models.TextField(blank=True)

    def __str__(self) -> str:
        return self.number


class Unwatched(models.Model):
    name = models.CharField(max_length=20)

    def __str__(self) -> str:
        return self.name
