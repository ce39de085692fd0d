from __future__ import annotations

from django.urls import path

from . import views

app_name = "chat"

urlpatterns = [
    path("conversations/", views.conversation_list, name="conversation-list"),
    path("conversations/<int:conversation_id>/", views.conversation_detail, name="conversation-detail"),
    path("conversations/<int:conversation_id>/messages/", views.conversation_messages, name="conversation-messages"),
    path("messages/<int:message_id>/delivery/", views.message_delivery, name="message-delivery"),
    path("demo/slow-query/", views.slow_query, name="slow-query"),
]
