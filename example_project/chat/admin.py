from __future__ import annotations

from django.contrib import admin

from .models import Conversation, Message


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "title", "created_at", "last_message_at"]
    search_fields = ["title"]
    raw_id_fields = ["created_by", "participants"]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "sender", "created_at"]
    raw_id_fields = ["sender"]
    date_hierarchy = "created_at"
