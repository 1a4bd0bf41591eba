"""`python -m services.admin`: the admin service alone, exactly as `fashion up --target admin` hosts it."""

from functools import partial

from services.admin.app import build
from services.admin.settings import AdminSettings
from services.process import Process, ProcessSettings

Process(ProcessSettings(), {"admin": partial(build, AdminSettings())}).run()
