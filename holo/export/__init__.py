"""Writers for hologram models: GLB (glTF 2.0) for headsets and browsers; and the reader
of their full-detail meshes (:mod:`holo.export.meshes`), for what leaves holo as geometry."""
