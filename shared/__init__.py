"""Common code of the FashionNet platform: model, data, stores, transport helpers."""
