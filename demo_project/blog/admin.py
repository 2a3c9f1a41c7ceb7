from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from .models import BlogPost, Page


# The stubs make ModelAdmin generic; Django's runtime class cannot be subscripted.
@admin.register(BlogPost)
class BlogPostAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["title", "status", "author", "updated_at"]
    list_filter = ["status"]
    list_select_related = ["author"]
    search_fields = ["title", "slug", "body"]
    prepopulated_fields = {"slug": ["title"]}
    date_hierarchy = "created_at"
    actions = ["publish", "unpublish"]

    def save_model(self, request: HttpRequest, obj: BlogPost, form: Any, change: bool) -> None:
        # A new post gets the signed-in user as author, so the payload's data shows one.
        if not change and obj.author_id is None and request.user.is_authenticated:
            obj.author = request.user
        super().save_model(request, obj, form, change)

    # save() per object rather than queryset.update(): update() sends no post_save, so the
    # publish/unpublish webhooks would silently not go out.
    @admin.action(description="Publish selected posts (sends publish webhooks)")
    def publish(self, request: HttpRequest, queryset: Any) -> None:
        for post in queryset.exclude(status=BlogPost.Status.PUBLISHED):
            post.status = BlogPost.Status.PUBLISHED
            post.save()

    @admin.action(description="Unpublish selected posts (sends unpublish webhooks)")
    def unpublish(self, request: HttpRequest, queryset: Any) -> None:
        for post in queryset.filter(status=BlogPost.Status.PUBLISHED):
            post.status = BlogPost.Status.DRAFT
            post.save()


@admin.register(Page)
class PageAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    list_display = ["title", "slug", "updated_at"]
    search_fields = ["title", "slug", "body"]
    prepopulated_fields = {"slug": ["title"]}
