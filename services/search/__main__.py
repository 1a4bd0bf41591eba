"""`python -m services.search`: the search service alone, exactly as `fashion up --target search` hosts it."""

from functools import partial

from services.process import Process, ProcessSettings
from services.search.app import build
from services.search.settings import SearchSettings

Process(ProcessSettings(), {"search": partial(build, SearchSettings())}).run()
