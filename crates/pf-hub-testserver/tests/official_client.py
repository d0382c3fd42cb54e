"""Drive the Hub test server with the OFFICIAL huggingface_hub client.

Env: HF_ENDPOINT, HF_TOKEN, HF_HUB_DISABLE_XET=1 (set by the Rust test).
Prints one JSON object with what it observed; exits non-zero on failure.
"""
import json
import os
import sys
import tempfile

from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.utils import HfHubHTTPError

api = HfApi(endpoint=os.environ["HF_ENDPOINT"], token=os.environ["HF_TOKEN"])
out = {}
repo = api.create_repo("pf-tester/fidelity", repo_type="dataset", private=True, exist_ok=True)
out["repo_url"] = str(repo)
api.create_repo("pf-tester/fidelity", repo_type="dataset", private=True, exist_ok=True)  # 409 handled
api.create_repo("pf-tester/a-model", repo_type="model", private=False)

with tempfile.TemporaryDirectory() as d:
    os.makedirs(os.path.join(d, "text"))
    os.makedirs(os.path.join(d, "bin"))
    for i in range(30):
        with open(os.path.join(d, "text", f"t{i}.json"), "w") as f:
            f.write(json.dumps({"i": i, "s": "hello " * 20}))
    for i in range(3):
        with open(os.path.join(d, "bin", f"b{i}.bin"), "wb") as f:
            f.write(bytes([0, 1, 2, 3]) * 300_000 + bytes([i]))
    api.upload_folder(folder_path=d, repo_id="pf-tester/fidelity", repo_type="dataset", commit_message="first")
    files = api.list_repo_files("pf-tester/fidelity", repo_type="dataset")
    out["files"] = len(files)
    tree = list(api.list_repo_tree("pf-tester/fidelity", repo_type="dataset", recursive=True))
    out["tree_entries"] = len(tree)
    out["lfs_in_tree"] = sum(1 for t in tree if getattr(t, "lfs", None))
    p = hf_hub_download("pf-tester/fidelity", "text/t7.json", repo_type="dataset",
                        endpoint=os.environ["HF_ENDPOINT"], token=os.environ["HF_TOKEN"],
                        cache_dir=os.path.join(d, "cache"))
    out["regular_ok"] = open(p).read() == open(os.path.join(d, "text", "t7.json")).read()
    p = hf_hub_download("pf-tester/fidelity", "bin/b2.bin", repo_type="dataset",
                        endpoint=os.environ["HF_ENDPOINT"], token=os.environ["HF_TOKEN"],
                        cache_dir=os.path.join(d, "cache"))
    out["lfs_ok"] = open(p, "rb").read() == open(os.path.join(d, "bin", "b2.bin"), "rb").read()
    print("UPLOAD_AGAIN", file=sys.stderr, flush=True)
    api.upload_folder(folder_path=d, repo_id="pf-tester/fidelity", repo_type="dataset", commit_message="again")

anon = HfApi(endpoint=os.environ["HF_ENDPOINT"], token=False)
try:
    anon.list_repo_files("pf-tester/fidelity", repo_type="dataset")
    out["private_hidden"] = False
except HfHubHTTPError as e:
    out["private_hidden"] = e.response.status_code in (401, 403, 404)
except Exception as e:  # RepositoryNotFoundError and friends
    out["private_hidden"] = True
print(json.dumps(out))
