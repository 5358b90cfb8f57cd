"""A small stand-in for the Hugging Face Hub, served on 127.0.0.1 by the publishing tests.

It speaks the part of the Hub's HTTP API that huggingface_hub 2.4 uses to publish and fetch a
model repo on its plain (non-Xet) path, as read from huggingface_hub's own source:

    POST /api/repos/create                              HfApi.create_repo (a model, or a Space with type "space")
    POST /api/validate-yaml                             README.md metadata check (create_commit, ModelCard.validate)
    POST /api/models/{repo}/branch/{branch}             HfApi.create_branch
    POST /api/models/{repo}/preupload/{rev}             _commit_api._fetch_upload_modes ("regular" or "lfs")
    POST /{repo}.git/info/lfs/objects/batch             lfs.post_lfs_batch_info (git-lfs batch API, basic transfer)
    PUT  /lfs-upload/{repo}/{oid}                       lfs._upload_single_part (the href the batch answer gave)
    POST /api/models/{repo}/commit/{rev}                _commit_api._send_commit (ndjson; ?create_pr=1)
    GET  /api/models/{repo}[/revision/{rev}]            HfApi.repo_info (snapshot_download resolves the commit)
    GET  /api/models/{repo}/tree/{rev}                  HfApi.list_repo_tree (recursive)
    HEAD/GET /{repo}/resolve/{rev}/{path}               hf_hub_download (X-Repo-Commit, ETag, Content-Length)

The /api/models/ routes also answer as /api/spaces/ (a Space's upload, `push --space`); a Space is kept
under the key "spaces/{repo}" (`hub.files("spaces/user/name")`).

Writes need `Authorization: Bearer <token>`; private repos need it for reads too. Every request
is logged (method, path, status) so tests can see what was sent again on a retry. `drop` makes
the server cut the connection in the middle of reading a request body, once per listed route
kind ("commit" or "lfs"), to play a network failure mid-upload.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

USER = "test-user"
GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.png filter=lfs diff=lfs merge=lfs -text\n"
# The Hub stores these as LFS whatever their content; anything else is LFS when it is binary.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".png", ".jpg")


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    private: bool
    commits: dict = field(default_factory=dict)  # sha -> {"files": {path: ("regular", bytes) | ("lfs", oid)}, ...}
    refs: dict = field(default_factory=dict)  # "main", "experiment", "refs/pr/1" -> sha
    lfs: set = field(default_factory=set)  # sha256 of the LFS objects uploaded to this repo
    num_prs: int = 0


class LocalHub:
    """`with LocalHub(token) as hub:` serves on `hub.url` until the block ends."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs: dict[str, bytes] = {}  # sha256 hex -> content (each repo lists the objects it has)
        self.log: list[tuple[str, str, int]] = []
        self.drop: list[str] = []  # route kinds whose next request is cut off mid-body
        self.lock = threading.RLock()  # handlers answer while holding it
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "LocalHub":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    # ------------------------------------------------------------------ state helpers for tests
    def files(self, repo_id: str, ref: str = "main") -> dict[str, bytes]:
        """The content of every file of `repo_id` at `ref`."""
        repo = self.repos[repo_id]
        files = repo.commits[repo.refs[ref]]["files"]
        return {path: data if kind == "regular" else self.lfs[data] for path, (kind, data) in files.items()}

    def requests(self, method: str, pattern: str) -> list[tuple[str, str, int]]:
        return [entry for entry in self.log if entry[0] == method and re.search(pattern, entry[1])]

    # ------------------------------------------------------------------ repo operations
    def _new_commit(self, repo: Repo, parent: str | None, files: dict, message: str) -> str:
        digest = hashlib.sha1((parent or "").encode() + message.encode())
        for path in sorted(files):
            kind, data = files[path]
            digest.update(path.encode() + (data if kind == "regular" else data.encode()))
        sha = digest.hexdigest()
        repo.commits[sha] = {"files": dict(files), "parent": parent, "message": message}
        return sha

    def _handler_class(hub):  # noqa: N805 - the handler closes over the hub
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output clean
                pass

            # ---------------------------------------------------------- plumbing
            def _reply(self, status: int, body=b"", headers=None, error_code=None):
                if isinstance(body, (dict, list)):
                    body = json.dumps(body).encode()
                    headers = {"Content-Type": "application/json", **(headers or {})}
                self.send_response(status)
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                if error_code:
                    self.send_header("X-Error-Code", error_code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)
                with hub.lock:
                    hub.log.append((self.command, self.path, status))

            def _error(self, status: int, message: str, error_code=None):
                self._reply(status, {"error": message}, error_code=error_code)

            def _body(self, kind: str) -> bytes | None:
                length = int(self.headers.get("Content-Length") or 0)
                with hub.lock:
                    drop = kind in hub.drop
                    if drop:
                        hub.drop.remove(kind)
                if drop:  # read part of the upload, then vanish without an answer
                    self.rfile.read(length // 2)
                    with hub.lock:
                        hub.log.append((self.command, self.path, 0))
                    self.close_connection = True
                    self.connection.close()
                    return None
                return self.rfile.read(length)

            def _authorized(self) -> bool:
                return self.headers.get("Authorization") == f"Bearer {hub.token}"

            def _repo(self, repo_id: str, write: bool) -> Repo | None:
                if write and not self._authorized():
                    self._error(401, "Invalid credentials in Authorization header")
                    return None
                repo = hub.repos.get(repo_id)
                if repo is None or (repo.private and not self._authorized()):
                    self._error(404, f"Repository not found: {repo_id}", "RepoNotFound")
                    return None
                return repo

            def _resolve(self, repo: Repo, rev: str) -> str | None:
                rev = unquote(rev)
                if rev in repo.refs:
                    return repo.refs[rev]
                if rev in repo.commits:
                    return rev
                self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
                return None

            # ---------------------------------------------------------- routes
            def do_HEAD(self):
                self.do_GET()

            def do_GET(self):
                path = urlsplit(self.path).path
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+))?", path):
                    return self._repo_info(m[1], m[2] or "main")
                if m := re.fullmatch(r"/api/models/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path):
                    return self._tree(m[1], m[2])
                if m := re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path):
                    return self._resolve_file(m[1], m[2], unquote(m[3]))
                self._error(404, f"no route for GET {path}")

            def do_PUT(self):
                path = urlsplit(self.path).path
                if m := re.fullmatch(r"/lfs-upload/((?:spaces/)?[^/]+/[^/]+)/([0-9a-f]{64})", path):
                    data = self._body("lfs")
                    if data is None:
                        return
                    if hashlib.sha256(data).hexdigest() != m[2]:
                        return self._error(400, "content does not match its sha256")
                    with hub.lock:
                        hub.lfs[m[2]] = data
                        hub.repos[m[1]].lfs.add(m[2])
                    return self._reply(200)
                self._error(404, f"no route for PUT {path}")

            def do_POST(self):
                split = urlsplit(self.path)
                path, query = split.path, parse_qs(split.query)
                if path == "/api/repos/create":
                    return self._create_repo(json.loads(self._body("create")))
                if path == "/api/validate-yaml":
                    return self._validate_yaml(json.loads(self._body("validate")))
                path = re.sub(r"^/api/spaces/", "/api/models/spaces/", path)  # a Space's key is "spaces/{repo}"
                if m := re.fullmatch(r"/api/models/((?:spaces/)?[^/]+/[^/]+)/branch/([^/]+)", path):
                    return self._create_branch(m[1], unquote(m[2]))
                if m := re.fullmatch(r"/api/models/((?:spaces/)?[^/]+/[^/]+)/preupload/([^/]+)", path):
                    return self._preupload(m[1], m[2], json.loads(self._body("preupload")))
                if m := re.fullmatch(r"/((?:spaces/)?[^/]+/[^/]+)\.git/info/lfs/objects/batch", path):
                    return self._lfs_batch(m[1], json.loads(self._body("batch")))
                if m := re.fullmatch(r"/api/models/((?:spaces/)?[^/]+/[^/]+)/commit/([^/]+)", path):
                    return self._commit(m[1], m[2], query.get("create_pr") == ["1"])
                self._error(404, f"no route for POST {path}")

            # ---------------------------------------------------------- handlers
            def _create_repo(self, payload):
                if not self._authorized():
                    return self._error(401, "Invalid credentials in Authorization header")
                repo_id = f"{payload.get('organization') or USER}/{payload['name']}"
                if payload.get("type") == "space":
                    if payload.get("sdk") not in ("gradio", "docker", "static", "streamlit"):
                        return self._error(400, "a Space needs an sdk")
                    repo_id = f"spaces/{repo_id}"
                url = f"{hub.url}/{repo_id}"
                with hub.lock:
                    if repo_id in hub.repos:  # the Hub's 409 names the existing repo's url too
                        return self._reply(409, {"error": "You already created this model repo", "url": url})
                    repo = hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
                    repo.refs["main"] = hub._new_commit(
                        repo, None, {".gitattributes": ("regular", GITATTRIBUTES)}, "initial commit"
                    )
                self._reply(200, {"url": url, "name": repo_id, "id": repo_id})

            def _validate_yaml(self, payload):
                """The Hub's metadata check, written from the model-card spec (not from the client's parser)."""
                errors = []
                match = re.match(r"^---\n(.*?)\n---\n", payload["content"], flags=re.DOTALL)
                metadata = {}
                if match:
                    try:
                        metadata = yaml.safe_load(match[1]) or {}
                    except yaml.YAMLError as err:
                        errors.append(f"YAML does not parse: {err}")
                if not isinstance(metadata, dict):
                    errors.append("metadata must be a mapping")
                    metadata = {}
                for entry in metadata.get("model-index") or []:
                    if not isinstance(entry.get("name"), str):
                        errors.append("model-index entries need a name")
                    for result in entry.get("results") or []:
                        if not isinstance((result.get("task") or {}).get("type"), str):
                            errors.append("each result needs task.type")
                        dataset = result.get("dataset") or {}
                        if not (isinstance(dataset.get("type"), str) and isinstance(dataset.get("name"), str)):
                            errors.append("each result needs dataset.type and dataset.name")
                        metrics = result.get("metrics") or []
                        if not metrics or not all(
                            isinstance(m.get("type"), str) and isinstance(m.get("value"), (int, float)) for m in metrics
                        ):
                            errors.append("each result needs metrics with a type and a numeric value")
                if errors:
                    return self._reply(400, {"errors": [{"message": e} for e in errors]})
                self._reply(200, {"errors": [], "warnings": []})

            def _create_branch(self, repo_id, branch):
                self._body("branch")
                with hub.lock:
                    repo = self._repo(repo_id, write=True)
                    if repo is None:
                        return
                    if branch in repo.refs:
                        return self._error(409, f"Reference already exists: {branch}")
                    repo.refs[branch] = repo.refs["main"]
                self._reply(200, {})

            def _preupload(self, repo_id, rev, payload):
                with hub.lock:
                    repo = self._repo(repo_id, write=True)
                    if repo is None or (sha := self._resolve(repo, rev)) is None:
                        return
                    existing = repo.commits[sha]["files"]
                answers = []
                for entry in payload["files"]:
                    sample = base64.b64decode(entry["sample"])
                    lfs = entry["path"].endswith(LFS_SUFFIXES) or b"\0" in sample
                    oid = None
                    if entry["path"] in existing:
                        kind, data = existing[entry["path"]]
                        oid = data if kind == "lfs" else git_blob_sha1(data)
                    answers.append({"path": entry["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
                self._reply(200, {"files": answers, "commitOid": sha})

            def _lfs_batch(self, repo_id, payload):
                with hub.lock:
                    repo = self._repo(repo_id, write=True)
                    if repo is None:
                        return
                    objects = []
                    for obj in payload["objects"]:
                        answer = {"oid": obj["oid"], "size": obj["size"]}
                        if obj["oid"] not in repo.lfs:  # only what this repo's store lacks is asked for
                            href = f"{hub.url}/lfs-upload/{repo_id}/{obj['oid']}"
                            answer["actions"] = {"upload": {"href": href, "header": {}}}
                        objects.append(answer)
                self._reply(200, {"transfer": "basic", "objects": objects})

            def _commit(self, repo_id, rev, create_pr):
                body = self._body("commit")
                if body is None:
                    return
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                header = lines[0]["value"]
                with hub.lock:
                    repo = self._repo(repo_id, write=True)
                    if repo is None or (parent := self._resolve(repo, rev)) is None:
                        return
                    files = dict(repo.commits[parent]["files"])
                    for line in lines[1:]:
                        value = line["value"]
                        if line["key"] == "file":
                            files[value["path"]] = ("regular", base64.b64decode(value["content"]))
                        elif line["key"] == "lfsFile":
                            if value["oid"] not in repo.lfs:
                                return self._error(422, f"LFS object {value['oid']} was never uploaded")
                            files[value["path"]] = ("lfs", value["oid"])
                        elif line["key"] == "deletedFile":
                            files.pop(value["path"], None)
                    sha = hub._new_commit(repo, parent, files, header["summary"])
                    pr_url = None
                    if create_pr:
                        repo.num_prs += 1
                        repo.refs[f"refs/pr/{repo.num_prs}"] = sha
                        pr_url = f"{hub.url}/{repo_id}/discussions/{repo.num_prs}"
                    else:
                        repo.refs[unquote(rev)] = sha
                self._reply(200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": pr_url})

            def _repo_info(self, repo_id, rev):
                with hub.lock:
                    repo = self._repo(repo_id, write=False)
                    if repo is None or (sha := self._resolve(repo, rev)) is None:
                        return
                    paths = sorted(repo.commits[sha]["files"])
                self._reply(200, {"id": repo_id, "sha": sha, "private": repo.private, "siblings": [{"rfilename": p} for p in paths]})

            def _tree(self, repo_id, rev):
                with hub.lock:
                    repo = self._repo(repo_id, write=False)
                    if repo is None or (sha := self._resolve(repo, rev)) is None:
                        return
                    entries = []
                    for path, (kind, data) in sorted(repo.commits[sha]["files"].items()):
                        if kind == "regular":
                            entries.append({"type": "file", "path": path, "size": len(data), "oid": git_blob_sha1(data)})
                        else:
                            size = len(hub.lfs[data])
                            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{data}\nsize {size}\n".encode()
                            entries.append(
                                {"type": "file", "path": path, "size": size, "oid": git_blob_sha1(pointer),
                                 "lfs": {"oid": data, "size": size, "pointerSize": len(pointer)}}
                            )
                self._reply(200, entries)

            def _resolve_file(self, repo_id, rev, path):
                with hub.lock:
                    repo = self._repo(repo_id, write=False)
                    if repo is None or (sha := self._resolve(repo, rev)) is None:
                        return
                    entry = repo.commits[sha]["files"].get(path)
                    if entry is None:
                        return self._reply(404, {"error": f"{path} not found"}, {"X-Repo-Commit": sha}, "EntryNotFound")
                    kind, data = entry
                    content = data if kind == "regular" else hub.lfs[data]
                headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha1(content)}"', "Accept-Ranges": "none"}
                if kind == "lfs":
                    headers.update({"X-Linked-Etag": f'"{data}"', "X-Linked-Size": str(len(content))})
                self._reply(200, content, headers)

        return Handler
