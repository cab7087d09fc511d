"""Meshes from label maps: surfaces (:mod:`.surface`), cleanup (:mod:`.cleanup`) and the
level-of-detail chain (:mod:`.lod`). Vertices stay in patient LPS millimetres; the glTF
frame is applied on export. Needs the ``convert`` extra."""

from holo.extras import need

need("convert", "trimesh", "scipy", "vtkmodules", "meshoptimizer", feature="meshing")
