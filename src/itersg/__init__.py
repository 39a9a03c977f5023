"""itersg: reproducible Iterative Scene Graph Generation (IterativeSG) and its backbone study.

The packages and modules stand in layers; each imports only from the layers below it (its docstring
says which, in a "May import:" line that tests/test_import_layers.py holds it to):

* ground floor: ``errors``; ``files`` (errors); ``catalog`` (errors); ``config`` (errors, catalog);
  ``precision`` (torch only);
* ``data``, ``models``, ``visualize``;
* ``evaluation``; ``engine``; ``report``; ``workflow``; ``bench`` and ``predict`` (a command's work);
* ``cli``, on top of everything.
"""

__version__ = "0.1.0"
