"""The model services: LandmarkService, AttributeService, EmbeddingService and AnalysisService.

All four are thin transports over one shared ModelRuntime, so a process hosting several of them runs one
forward pass per image (DESIGN.md: on GPU nodes each deployment hosts the one it is scaled for).
"""

MODEL_TARGETS = ("landmark", "attributes", "embedding", "analysis")
