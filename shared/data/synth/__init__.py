"""Procedural DeepFashion: every benchmark's images and annotation files, generated offline from a seed.

``generate(benchmark, out, items, seed)`` writes the published layouts (In-shop, Consumer-to-shop,
Category-and-Attribute, Landmark Detection), so every command of the project runs with no download.
"""

from shared.data.synth.catalog import ATTRIBUTES, BENCHMARKS, CATEGORIES
from shared.data.synth.pipeline import SynthSummary, generate

__all__ = ["ATTRIBUTES", "BENCHMARKS", "CATEGORIES", "SynthSummary", "generate"]
