"""Pictures of scene graphs: boxes drawn on an image and the list of ``subject —predicate→ object`` triplets.

Shared by ``itersg predict`` (one PNG per image) and the report's gallery (thumbnails).

May import: nothing of itersg.
"""
