import os

# Two cores here: keep torch from oversubscribing when pytest and helpers share the machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")
