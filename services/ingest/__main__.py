"""`python -m services.ingest`: the ingest service alone, exactly as `fashion up --target ingest` hosts it."""

from functools import partial

from services.ingest.app import build
from services.ingest.settings import IngestSettings
from services.process import Process, ProcessSettings

Process(ProcessSettings(), {"ingest": partial(build, IngestSettings())}).run()
