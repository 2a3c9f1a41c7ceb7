from django.urls import path

from . import views
from .models import Slot

app_name = "receiver"

urlpatterns = [
    path("", views.log, name="log"),
    path("standard/", views.receive, {"slot": Slot.STANDARD.value}, name="standard"),
    path("scalar/", views.receive, {"slot": Slot.SCALAR.value}, name="scalar"),
    path("switch/", views.switch, name="switch"),
    path("clear/", views.clear, name="clear"),
]
