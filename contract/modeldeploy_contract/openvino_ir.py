"""The two files of an OpenVINO IR model: NAME.xml (the graph) and NAME.bin (the weights), always
side by side with the same stem, as `ovc`, `openvino.save_model`, optimum-intel and NNCF write them.
The model's location names the .xml; the operator's pre-flight check, the runtime's download and
the backend all find the .bin from it here, so they cannot disagree on where it is."""

from __future__ import annotations

import urllib.parse


def _path_of(location: str) -> str:
    # Only a URL has a query (a signed URL's token); an object key may hold '?' or '#' itself.
    if location.startswith(("http://", "https://")):
        return urllib.parse.urlsplit(location).path
    return location


def is_ir(location: str) -> bool:
    """A path or URI whose file name ends in .xml."""
    return _path_of(str(location)).lower().endswith(".xml")


def weights_of(location: str) -> str:
    """The .bin beside the .xml of ``location`` (a path or a URI; a URL keeps its query)."""
    location = str(location)
    if not location.startswith(("http://", "https://")):
        return location[: -len(".xml")] + ".bin"
    parts = urllib.parse.urlsplit(location)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path[: -len(".xml")] + ".bin"))
