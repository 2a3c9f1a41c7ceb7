"""Serializers named by dotted path in tests' WEBHOOKS settings (``serializer``,
``USER_SERIALIZER``): one plain callable, one DRF serializer class."""

from typing import Any

from rest_framework import serializers

from tests.models import Article, Invoice


def invoice_summary(invoice: Invoice) -> dict[str, Any]:
    # Returns non-JSON types on purpose: run_serializer must encode them.
    return {"number": invoice.number, "amount": invoice.amount, "issued_on": invoice.issued_on}


class ArticleSerializer(serializers.ModelSerializer[Article]):
    headline = serializers.SerializerMethodField()

    class Meta:
        model = Article
        fields = ["id", "uid", "title", "price", "author", "headline"]

    def get_headline(self, article: Article) -> str:
        return article.title.upper()
