"""Drive pf-hub-testserver with the OFFICIAL huggingface_hub client.

Run by tests/official_client.rs, which sets HF_ENDPOINT, HF_TOKEN (write,
user pf-tester), PF_READ_TOKEN (read-only, pf-tester), PF_OTHER_TOKEN
(write, another user), PF_LFS_THRESHOLD, HF_HUB_DISABLE_XET=1 and a
throwaway HF_HOME. Every check raises with a message; on success it prints
one JSON line with what it observed.
"""
import hashlib
import json
import os
import tempfile
import urllib.request

import huggingface_hub
from huggingface_hub import HfApi, hf_hub_download
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils.sha import git_hash

EP = os.environ["HF_ENDPOINT"]
THRESHOLD = int(os.environ["PF_LFS_THRESHOLD"])
api = HfApi(endpoint=EP, token=os.environ["HF_TOKEN"])
out = {"client_version": huggingface_hub.__version__}


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def stats():
    with urllib.request.urlopen(EP + "/_testserver/stats") as r:
        return json.load(r)


def route(s, name):
    return s["routes"].get(name, 0)


def raises(exc, fn, what, status=None):
    try:
        fn()
    except exc as e:
        code = getattr(getattr(e, "response", None), "status_code", None)
        check(status is None or code == status, f"{what}: expected HTTP {status}, got {code}")
        return
    raise AssertionError(f"{what}: expected {exc.__name__}")


# --- identity and repositories -------------------------------------------
check(api.whoami()["name"] == "pf-tester", "whoami")
DS, MODEL, PUBLIC = "pf-tester/fidelity-ds", "pf-tester/fidelity-model", "pf-tester/public-model"
url = api.create_repo(DS, repo_type="dataset", private=True)
check(url.repo_id == DS and url.repo_type == "dataset", f"create_repo url {url!r}")
api.create_repo(DS, repo_type="dataset", private=True, exist_ok=True)  # 409, tolerated
raises(HfHubHTTPError, lambda: api.create_repo(DS, repo_type="dataset"), "create twice", 409)
api.create_repo(MODEL, private=True)
api.create_repo(PUBLIC, private=False)
check(api.list_repo_files(DS, repo_type="dataset") == [".gitattributes"], "new repo holds .gitattributes")

# --- a folder with regular and LFS files (three ways to be LFS) ------------
work = tempfile.mkdtemp()
src = os.path.join(work, "src")
local = {}


def put(rel, data):
    p = os.path.join(src, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    local[rel] = data


for d in "abc":
    for i in range(15):
        put(f"text/{d}/f{i}.json", json.dumps({"dir": d, "i": i, "s": "hello " * 10}).encode())
put("notes/readme.txt", b"plain text\n")
put("empty.txt", b"")
for i in range(3):  # *.bin: LFS by the repo's .gitattributes, although the bytes are text
    put(f"weights/w{i}.bin", (f"weights {i} " * 5000).encode())
for i in range(2):  # NUL bytes: LFS because the preupload sample looks binary
    put(f"data/blob{i}.dat", bytes(range(256)) * 40 + bytes([i]))
put("big/large.txt", b"x" * (THRESHOLD + 1))  # over the size threshold
LFS = {p for p in local if p.startswith(("weights/", "data/", "big/"))}

first = api.upload_folder(folder_path=src, repo_id=DS, repo_type="dataset", commit_message="first")
check(len(first.oid) == 40, "commit oid is 40 hex")
s1 = stats()
check(s1["lfs_uploads"] == len(LFS), f"LFS uploads {s1['lfs_uploads']} != {len(LFS)}")
check(route(s1, "lfs.verify") == len(LFS), "every LFS upload verified")
check(s1["commits"] == 1, "one commit")
out["first_commit"] = first.oid

# --- listing (paginated) ---------------------------------------------------
files = api.list_repo_files(DS, repo_type="dataset")
check(sorted(files) == sorted(list(local) + [".gitattributes"]), f"list_repo_files: {files}")
pages_before = stats()["tree_pages"]
tree = list(api.list_repo_tree(DS, repo_type="dataset", recursive=True))
out["tree_pages"] = stats()["tree_pages"] - pages_before
check(out["tree_pages"] > 1, "tree listing paginated")
tree_files = {t.path: t for t in tree if isinstance(t, huggingface_hub.hf_api.RepoFile)}
dirs = {t.path for t in tree if isinstance(t, huggingface_hub.hf_api.RepoFolder)}
check(dirs == {"text", "text/a", "text/b", "text/c", "notes", "weights", "data", "big"}, f"dirs {dirs}")
for p, data in local.items():
    t = tree_files[p]
    check(t.size == len(data), f"size of {p}")
    if p in LFS:
        check(t.lfs is not None and t.lfs.sha256 == hashlib.sha256(data).hexdigest(), f"lfs info of {p}")
    else:
        check(t.lfs is None and t.blob_id == git_hash(data), f"blob id of {p}")
out["lfs_in_tree"] = sum(1 for t in tree_files.values() if t.lfs)
sub = list(api.list_repo_tree(DS, path_in_repo="text/a", repo_type="dataset"))
check(len(sub) == 15, "subtree listing")
expanded = list(api.list_repo_tree(DS, path_in_repo="weights", repo_type="dataset", expand=True))
check(all(t.last_commit and t.last_commit.oid == first.oid for t in expanded), "expand=True lastCommit")
info = api.dataset_info(DS, files_metadata=True)
check(info.sha == first.oid and info.private, "dataset_info sha/private")
sib = {s.rfilename: s for s in info.siblings}
check(sib["weights/w1.bin"].lfs.sha256 == hashlib.sha256(local["weights/w1.bin"]).hexdigest(), "sibling lfs")

# --- downloads (regular inline, LFS via 302 to the storage origin) ---------
cache = os.path.join(work, "cache")


def dl(repo, path, **kw):
    with open(hf_hub_download(repo, path, cache_dir=cache, **kw), "rb") as f:
        return f.read()


check(dl(DS, "text/a/f3.json", repo_type="dataset") == local["text/a/f3.json"], "regular download")
check(dl(DS, "weights/w1.bin", repo_type="dataset") == local["weights/w1.bin"], "LFS download")
check(dl(DS, "big/large.txt", repo_type="dataset", revision=first.oid) == local["big/large.txt"], "by commit")
check(dl(DS, "empty.txt", repo_type="dataset") == b"", "empty file")
check(route(stats(), "lfs.download") >= 2, "LFS bytes came from the storage origin")
raises(RemoteEntryNotFoundError, lambda: dl(DS, "nope.txt", repo_type="dataset"), "missing file", 404)
raises(RevisionNotFoundError, lambda: dl(DS, "empty.txt", repo_type="dataset", revision="nope"), "bad rev", 404)

# --- re-push: nothing uploaded ---------------------------------------------
before = stats()
again = api.upload_folder(folder_path=src, repo_id=DS, repo_type="dataset", commit_message="again")
after = stats()
check(after["lfs_uploads"] == before["lfs_uploads"], "re-push uploaded LFS objects")
check(after["commits"] == before["commits"] and again.oid == first.oid, "unchanged re-push is a no-op")
# Same bytes under new paths: the batch API answers without actions, so no PUT.
copy = api.upload_folder(folder_path=src, path_in_repo="copy", repo_id=DS, repo_type="dataset")
after2 = stats()
check(route(after2, "lfs.batch") > route(after, "lfs.batch"), "copy went through the LFS batch API")
check(route(after2, "lfs.upload") == route(after, "lfs.upload"), "copy uploaded LFS objects again")
check(after2["commits"] == after["commits"] + 1, "copy is one commit")
check(dl(DS, "copy/data/blob1.dat", repo_type="dataset") == local["data/blob1.dat"], "copy download")
out["reupload_lfs_puts"] = route(after2, "lfs.upload") - route(before, "lfs.upload")

# --- tags, branches, deletes -----------------------------------------------
api.create_tag(DS, tag="v1", revision=first.oid, repo_type="dataset")
api.create_branch(DS, branch="dev", repo_type="dataset")
refs = api.list_repo_refs(DS, repo_type="dataset")
check([(t.name, t.target_commit) for t in refs.tags] == [("v1", first.oid)], f"tags {refs.tags}")
check({b.name for b in refs.branches} == {"main", "dev"}, f"branches {refs.branches}")
api.delete_file("notes/readme.txt", DS, repo_type="dataset")
check("notes/readme.txt" not in api.list_repo_files(DS, repo_type="dataset"), "delete_file")
check(dl(DS, "notes/readme.txt", repo_type="dataset", revision="v1") == b"plain text\n", "read by tag")

# --- a model repo ------------------------------------------------------------
weights = b"\x00\x01binary" * 3000
api.upload_file(path_or_fileobj=weights, path_in_repo="model.safetensors", repo_id=MODEL)
api.upload_file(path_or_fileobj=b'{"hidden": 8}', path_in_repo="config.json", repo_id=MODEL)
check(dl(MODEL, "model.safetensors") == weights, "model LFS download")
check(dl(MODEL, "config.json") == b'{"hidden": 8}', "model regular download")

# --- history and super-squash -----------------------------------------------
hist = api.list_repo_commits(MODEL)
check([c.title for c in hist][-1] == "initial commit", f"history {[c.title for c in hist]}")
check(len(hist) == 3 and hist[0].authors == ["pf-tester"], f"history {hist}")
weights_commit = hist[1].commit_id
api.upload_file(path_or_fileobj=b"\x00\x02newer" * 3000, path_in_repo="model.safetensors", repo_id=MODEL)
check(dl(MODEL, "model.safetensors", revision=weights_commit) == weights, "old revision before squash")
api.super_squash_history(repo_id=MODEL)
squashed = api.list_repo_commits(MODEL)
check(len(squashed) == 1, f"squashed history {[c.title for c in squashed]}")
check(squashed[0].title == "Super-squash branch 'main' using huggingface_hub", squashed[0].title)
check(dl(MODEL, "config.json") == b'{"hidden": 8}', "files survive the squash")
raises(RevisionNotFoundError, lambda: api.list_repo_files(MODEL, revision=weights_commit), "squashed", 404)
out["super_squash_commits"] = len(squashed)

# --- privacy and permissions -------------------------------------------------
anon = HfApi(endpoint=EP, token=False)
other = HfApi(endpoint=EP, token=os.environ["PF_OTHER_TOKEN"])
ro = HfApi(endpoint=EP, token=os.environ["PF_READ_TOKEN"])
for repo, kind in ((DS, "dataset"), (MODEL, "model")):
    raises(RepositoryNotFoundError, lambda: anon.list_repo_files(repo, repo_type=kind), f"anon {repo}", 401)
    raises(RepositoryNotFoundError, lambda: anon.repo_info(repo, repo_type=kind), f"anon info {repo}", 401)
    raises(RepositoryNotFoundError, lambda: other.list_repo_files(repo, repo_type=kind), f"other {repo}", 404)
    raises(
        RepositoryNotFoundError,
        lambda: dl(repo, ".gitattributes", repo_type=kind, token=False),
        f"anon download {repo}",
    )
check(anon.list_repo_files(PUBLIC) == [".gitattributes"], "public repo readable anonymously")
check(len(ro.list_repo_files(DS, repo_type="dataset")) > 0, "read token reads")
raises(HfHubHTTPError, lambda: ro.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id=MODEL), "ro", 403)
raises(HfHubHTTPError, lambda: other.upload_file(path_or_fileobj=b"x", path_in_repo="x", repo_id=PUBLIC), "o", 403)
bad = HfApi(endpoint=EP, token="hf_not_a_token")
raises(HfHubHTTPError, lambda: bad.list_repo_files(PUBLIC), "unknown token", 401)
out["private_hidden"] = True
print(json.dumps(out))
