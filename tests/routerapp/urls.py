from __future__ import annotations

from django.urls import path

from tests.routerapp import views

urlpatterns = [
    path("notes/", views.notes),
    path("notes/<int:pk>/", views.note_detail),
    path("whoami/", views.whoami),
]
