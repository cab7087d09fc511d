"""Writers for hologram models: GLB (glTF 2.0) for headsets and browsers."""
