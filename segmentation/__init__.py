"""Segmentation: a volume's array and geometry in, a label map out.

Nothing here imports the server, grpc or generated code. Bone, skin and soft-tissue
presets arrive with the convert work (issue 3).
"""
