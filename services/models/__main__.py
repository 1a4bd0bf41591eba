"""`python -m services.models`: the four model services alone, exactly as
`fashion up --target landmark,attributes,embedding,analysis` hosts them."""

from functools import partial

from services.models import MODEL_TARGETS
from services.models.app import build
from services.process import Process, ProcessSettings

Process(ProcessSettings(), {",".join(MODEL_TARGETS): partial(build, MODEL_TARGETS)}).run()
