"""The cdn sample's own code: the name -> CID index, HTTP header rules and the /cdn routes.

- :mod:`.index`: the index item (``FileEntry``, in the shared namespace ``cdn``) and the name rules;
- :mod:`.headers`: ``Range`` and ``If-None-Match``, as the cdn answers them;
- :mod:`.service`: the impl of ``cdn.v1.Cdn``, which adds the /cdn routes to the node's HTTP server.
"""
