"""Pull a pf-registry push with an independent OCI client (oras-py).

Usage: oras_interop.py HOST/REPO:TAG
Prints JSON: artifactType, layer count, the config blob's sha256 and whether
every layer's bytes hash to its descriptor digest.
"""
import hashlib
import json
import sys

import oras.provider

target = sys.argv[1]
host = target.split("/")[0]
reg = oras.provider.Registry(hostname=host, insecure=True)
manifest = reg.get_manifest(
    target,
    allowed_media_type=[
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
    ],
)
config = reg.get_blob(target, manifest["config"]["digest"]).content
ok = True
for layer in manifest["layers"]:
    data = reg.get_blob(target, layer["digest"]).content
    if "sha256:" + hashlib.sha256(data).hexdigest() != layer["digest"] or len(data) != layer["size"]:
        ok = False
tags = reg.get_tags(target)
print(json.dumps({
    "artifactType": manifest.get("artifactType"),
    "configMediaType": manifest["config"]["mediaType"],
    "layers": len(manifest["layers"]),
    "config_sha256": "sha256:" + hashlib.sha256(config).hexdigest(),
    "layers_ok": ok,
    "tags": tags,
}))
