"""globus:// staging: the tasks built for a batch (globus-sdk's own TransferData), the handle, the status mapping
and the messages, against a real globus_sdk.TransferClient whose HTTP layer is a fake Transfer service (the
live one cannot be reached from tests)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

globus_sdk = pytest.importorskip("globus_sdk")
requests = pytest.importorskip("requests")

from globus_sdk.token_storage import SQLiteTokenStorage, TokenStorageData  # noqa: E402
from globus_sdk.transport import RequestsTransport, RetryConfig  # noqa: E402

from sluice import transfers  # noqa: E402
from sluice.transfers import Item, TransferError, TransferHandle, TransferState  # noqa: E402
from sluice.transfers.globus import GlobusTransfer  # noqa: E402
from sluice.transfers.globus_parts import (  # noqa: E402
    INSTALL_HINT,
    LocalEndpoint,
    Want,
    access_token,
    parse_url,
)

EP_A = "11111111-1111-4111-8111-111111111111"
EP_B = "22222222-2222-4222-8222-222222222222"
LOCAL = "33333333-3333-4333-8333-333333333333"
SECRET = "AgSECRETtokenVALUE0123456789"


class FakeTransferService(requests.adapters.BaseAdapter):  # type: ignore[misc]
    """Answers the Transfer API calls sluice makes; remembers every request."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, Any]] = []
        self.auth: list[str] = []
        self.tasks: dict[str, list[dict[str, Any]]] = {}  # task id -> get_task answers, the last one repeats
        self.fail: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}  # (method, path) -> error answer
        self.submitted = 0

    def send(self, request: Any, **kwargs: Any) -> Any:
        path = urlparse(request.url).path
        body = json.loads(request.body) if request.body else None
        self.calls.append((request.method, path, body))
        self.auth.append(request.headers.get("Authorization", ""))
        status, answer = self.fail.get((request.method, path), (200, None))
        if answer is None:
            answer = self._answer(request.method, path)
        r = requests.Response()
        r.status_code = status
        r._content = json.dumps(answer).encode()
        r.headers["Content-Type"] = "application/json"
        r.request, r.url = request, request.url
        return r

    def _answer(self, method: str, path: str) -> dict[str, Any]:
        if path.endswith("/submission_id"):
            return {"value": f"sub-{len(self.calls)}"}
        if method == "POST" and path.endswith("/transfer"):
            self.submitted += 1
            tid = f"aaaaaaaa-0000-4000-8000-00000000000{self.submitted}"
            self.tasks.setdefault(tid, [{"status": "SUCCEEDED", "nice_status": None}])
            return {"DATA_TYPE": "transfer_result", "code": "Accepted", "task_id": tid, "submission_id": "s"}
        if method == "POST" and path.endswith("/cancel"):
            return {"code": "Canceled", "message": "The task has been cancelled successfully."}
        if method == "GET" and "/task/" in path:
            tid = path.rsplit("/", 1)[1]
            answers = self.tasks[tid]
            doc = answers.pop(0) if len(answers) > 1 else answers[0]
            return {"DATA_TYPE": "task", "task_id": tid, **doc}
        raise AssertionError(f"unexpected {method} {path}")

    def close(self) -> None:
        pass

    def submits(self) -> list[dict[str, Any]]:
        return [b for m, p, b in self.calls if m == "POST" and p.endswith("/transfer")]


@pytest.fixture
def service() -> FakeTransferService:
    return FakeTransferService()


def _client(service: FakeTransferService) -> Any:
    transport = RequestsTransport()
    transport.session.mount("https://", service)
    return globus_sdk.TransferClient(authorizer=globus_sdk.AccessTokenAuthorizer(SECRET), transport=transport,
                                     retry_config=RetryConfig(max_retries=0))


def _transfer(service: FakeTransferService, env: dict[str, str] | None = None, **kw: Any) -> GlobusTransfer:
    environ = {"SLUICE_GLOBUS_LOCAL_ENDPOINT": f"{LOCAL}:/work=/data"} if env is None else env
    return GlobusTransfer(_client(service), environ=environ, interval_s=0, sleep=lambda s: None, **kw)


def test_a_batch_across_two_endpoint_pairs_is_two_tasks(tmp_path: Path, service: FakeTransferService) -> None:
    job = tmp_path / "job"
    job.mkdir()
    t = _transfer(service, {"SLUICE_GLOBUS_LOCAL_ENDPOINT": f"{LOCAL}:{tmp_path}=/~/runs"})
    batch = [
        Want(f"globus://{EP_A}/archive/in.dat", str(job)),  # an existing directory: the file keeps its name
        Want(f"globus://{EP_B}/lib/table.h5", str(job / "t.h5"), checksum="sha256:ABCDEF0123"),
        Want(f"globus://{EP_A}/archive/mesh/", str(job)),  # a directory: recursive
    ]
    tasks = t.plan(batch)
    assert [(x.source, x.destination) for x in tasks] == [(EP_A, LOCAL), (EP_B, LOCAL)]
    a, b = (x.data for x in tasks)
    assert isinstance(a, globus_sdk.TransferData)
    assert a["source_endpoint"] == EP_A and a["destination_endpoint"] == LOCAL
    assert [(i["source_path"], i["destination_path"], i["recursive"]) for i in a["DATA"]] == [
        ("/archive/in.dat", "/~/runs/job/in.dat", False),
        ("/archive/mesh/", "/~/runs/job/mesh/", True),
    ]
    (item,) = b["DATA"]
    assert (item["source_path"], item["destination_path"]) == ("/lib/table.h5", "/~/runs/job/t.h5")
    assert (item["external_checksum"], item["checksum_algorithm"]) == ("abcdef0123", "SHA256")
    for data in (a, b):
        assert data["sync_level"] == 3 and data["verify_checksum"] is True
        assert data["label"].startswith("sluice stage-in ")
    assert tasks[0].written == [job / "in.dat", job / "mesh"] and tasks[1].written == [job / "t.h5"]

    handle = t.submit(batch)
    sent = service.submits()
    assert len(sent) == 2
    assert [d["source_path"] for d in sent[0]["DATA"]] == ["/archive/in.dat", "/archive/mesh/"]
    assert sent[1]["DATA"][0]["external_checksum"] == "abcdef0123" and sent[1]["source_endpoint"] == EP_B
    assert all(s["submission_id"] for s in sent)
    assert "external_checksum" not in sent[0]["DATA"][0]  # no checksum given: none sent
    assert handle.scheme == "globus" and handle.outcome is None
    ids = GlobusTransfer.task_ids(handle)
    assert len(ids) == 2 and handle.id == ",".join(ids)
    again = TransferHandle("globus", handle.id)  # what a restarted process rebuilds from the stored id
    assert again == handle and GlobusTransfer.task_ids(again) == ids
    assert _transfer(service).poll(again).state is TransferState.DONE  # any instance may poll it
    assert service.auth[-1] == f"Bearer {SECRET}"


def test_an_item_with_a_checksum_field(tmp_path: Path, service: FakeTransferService) -> None:
    src, dest = f"globus://{EP_A}/x", str(tmp_path / "x")
    if "checksum" in {f.name for f in dataclasses.fields(Item)}:
        item = Item(src, dest, checksum="md5:00ff")  # type: ignore[call-arg,unused-ignore]
    else:  # before base.Item has its checksum field
        @dataclasses.dataclass(frozen=True)
        class WithChecksum(Item):
            checksum: str | None = None

        item = WithChecksum(src, dest, checksum="md5:00ff")
    (task,) = _transfer(service, {"SLUICE_GLOBUS_LOCAL_ENDPOINT": LOCAL}).plan([item])
    assert task.data["DATA"][0]["checksum_algorithm"] == "MD5"
    assert task.data["DATA"][0]["destination_path"] == str(tmp_path / "x")  # no mapping: the local path itself


def test_stage_out_expands_local_globs(tmp_path: Path, service: FakeTransferService) -> None:
    for n in ("a.out", "b.out", "c.log"):
        (tmp_path / n).write_text(n)
    t = _transfer(service, {"SLUICE_GLOBUS_LOCAL_ENDPOINT": f"{LOCAL}:{tmp_path}=/scratch"})
    (task,) = t.plan([Item(str(tmp_path / "*.out"), f"globus://{EP_B}/results", put=True),
                      Item(str(tmp_path / "c.log"), f"globus://{EP_B}/logs/run1.log", put=True)])
    assert (task.source, task.destination) == (LOCAL, EP_B)
    assert [(i["source_path"], i["destination_path"]) for i in task.data["DATA"]] == [
        ("/scratch/a.out", "/results/a.out"), ("/scratch/b.out", "/results/b.out"),
        ("/scratch/c.log", "/logs/run1.log")]
    assert task.data["label"] == "sluice stage-out 3 items"
    assert task.sent == [tmp_path / "a.out", tmp_path / "b.out", tmp_path / "c.log"]
    assert t.put(tmp_path / "c.log", f"globus://{EP_B}/logs/") == [tmp_path / "c.log"]
    assert service.submits()[-1]["DATA"][0]["destination_path"] == "/logs/c.log"
    (tmp_path / "mesh").mkdir()
    (task,) = t.plan([Item(str(tmp_path / "mesh"), f"globus://{EP_B}/results/", put=True)])
    assert [(i["source_path"], i["destination_path"], i["recursive"]) for i in task.data["DATA"]] == [
        ("/scratch/mesh/", "/results/mesh/", True)]
    assert task.data["label"] == "sluice stage-out 1 item"


def test_endpoint_to_endpoint_needs_no_local_endpoint(service: FakeTransferService) -> None:
    (task,) = _transfer(service, {}).plan([Want(f"globus://{EP_A}/a/b.dat", f"globus://{EP_B}/c/")])
    assert (task.source, task.destination) == (EP_A, EP_B)
    assert task.data["DATA"][0]["destination_path"] == "/c/b.dat" and task.written == []


@pytest.mark.parametrize(
    ("doc", "state", "transient", "words"),
    [({"status": "SUCCEEDED"}, TransferState.DONE, False, ""),
     ({"status": "ACTIVE", "nice_status": "Queued"}, TransferState.ACTIVE, False, ""),
     ({"status": "ACTIVE", "nice_status": "PERMISSION_DENIED"}, TransferState.ACTIVE, False, "PERMISSION_DENIED"),
     ({"status": "INACTIVE", "nice_status": "AUTH"}, TransferState.FAILED, True, "globus login"),
     ({"status": "FAILED", "nice_status": "FILE_NOT_FOUND",
       "fatal_error": {"code": "FILE_NOT_FOUND", "description": "No such file /archive/in.dat"}},
      TransferState.FAILED, False, "FILE_NOT_FOUND: No such file /archive/in.dat"),
     ({"status": "FAILED", "fatal_error": {"code": "CANCELED", "description": "canceled"}},
      TransferState.CANCELLED, False, "cancelled")],
)
def test_status_mapping(service: FakeTransferService, doc: dict[str, Any], state: TransferState, transient: bool,
                        words: str) -> None:
    tid = "bbbbbbbb-0000-4000-8000-000000000001"
    service.tasks[tid] = [doc]
    s = _transfer(service).poll(TransferHandle("globus", tid))
    assert (s.state, s.transient) == (state, transient)
    assert words in s.message and "\n" not in s.message
    if state is TransferState.FAILED:
        assert tid in s.message


def test_a_batch_is_as_far_as_its_slowest_task_and_fails_with_any(service: FakeTransferService) -> None:
    t = _transfer(service)
    service.tasks = {"t1": [{"status": "SUCCEEDED"}], "t2": [{"status": "ACTIVE"}, {"status": "SUCCEEDED"}]}
    h = TransferHandle("globus", "t1,t2")
    assert t.poll(h).state is TransferState.ACTIVE
    assert t.poll(h).state is TransferState.DONE
    service.tasks = {"t1": [{"status": "INACTIVE"}], "t2": [{"status": "FAILED", "nice_status": "QUOTA"}]}
    s = t.poll(h)
    assert (s.state, s.transient) == (TransferState.FAILED, False) and "t2 failed: QUOTA" in s.message


def test_cancel_each_task_and_leave_ended_ones(service: FakeTransferService) -> None:
    t = _transfer(service)
    service.fail[("POST", "/v0.10/task/t2/cancel")] = (409, {"code": "Conflict", "message": "task complete"})
    t.cancel(TransferHandle("globus", "t1,t2"))
    assert [p for m, p, _ in service.calls] == ["/v0.10/task/t1/cancel", "/v0.10/task/t2/cancel"]
    service.fail[("POST", "/v0.10/task/t1/cancel")] = (500, {"code": "ServiceUnavailable", "message": "down"})
    with pytest.raises(TransferError) as exc:
        t.cancel(TransferHandle("globus", "t1"))
    assert exc.value.transient


def test_copy_waits_for_the_task(tmp_path: Path, service: FakeTransferService) -> None:
    service.tasks["aaaaaaaa-0000-4000-8000-000000000001"] = [{"status": "ACTIVE"}] * 3 + [{"status": "SUCCEEDED"}]
    t = _transfer(service, {"SLUICE_GLOBUS_LOCAL_ENDPOINT": LOCAL})
    out = t.copy(f"globus://{EP_A}/a/in.dat", tmp_path / "sub" / "in.dat", checksum="sha1:abc")
    assert out == [tmp_path / "sub" / "in.dat"] and (tmp_path / "sub").is_dir()
    assert sum(1 for m, p, _ in service.calls if "/task/" in p) == 4
    assert service.submits()[0]["DATA"][0]["checksum_algorithm"] == "SHA1"
    assert transfers.scheme(f"globus://{EP_A}/a") == "globus"


def test_copy_gives_up_after_its_timeout_and_cancels(tmp_path: Path, service: FakeTransferService) -> None:
    service.tasks["aaaaaaaa-0000-4000-8000-000000000001"] = [{"status": "ACTIVE"}]
    t = _transfer(service, {"SLUICE_GLOBUS_LOCAL_ENDPOINT": LOCAL}, timeout_s=0.05)
    t._sleep = lambda s: time.sleep(0.01)
    with pytest.raises(TransferError, match="did not finish in 0.05 s; cancelled") as exc:
        t.copy(f"globus://{EP_A}/a/in.dat", tmp_path)
    assert exc.value.transient
    assert service.calls[-1][1] == "/v0.10/task/aaaaaaaa-0000-4000-8000-000000000001/cancel"


def test_an_inactive_task_is_cancelled_before_copy_reports_it(tmp_path: Path, service: FakeTransferService) -> None:
    service.tasks["aaaaaaaa-0000-4000-8000-000000000001"] = [{"status": "INACTIVE"}]
    with pytest.raises(TransferError, match="INACTIVE.*globus login") as exc:
        _transfer(service, {"SLUICE_GLOBUS_LOCAL_ENDPOINT": LOCAL}).copy(f"globus://{EP_A}/a", tmp_path)
    assert exc.value.transient and service.calls[-1][1].endswith("/cancel")


def test_missing_local_endpoint_is_one_clear_line(tmp_path: Path, service: FakeTransferService) -> None:
    t = _transfer(service, {})
    with pytest.raises(TransferError) as exc:
        t.copy(f"globus://{EP_A}/a/in.dat", tmp_path)
    msg = str(exc.value)
    assert msg.startswith("SLUICE_GLOBUS_LOCAL_ENDPOINT is not set") and "\n" not in msg
    assert not exc.value.transient
    h = t.submit([Item(f"globus://{EP_A}/a/in.dat", str(tmp_path))])
    assert h.outcome is not None and t.poll(h).state is TransferState.FAILED and t.poll(h).message == msg
    assert service.calls == []  # nothing was sent
    for bad, words in [("not-a-uuid", "is not a Globus endpoint id"), (f"{LOCAL}:work=/x", "bad prefix mapping")]:
        with pytest.raises(TransferError, match=words):
            LocalEndpoint.from_environ({"SLUICE_GLOBUS_LOCAL_ENDPOINT": bad})


def test_local_paths_map_through_the_longest_prefix() -> None:
    ep = LocalEndpoint.from_environ({"SLUICE_GLOBUS_LOCAL_ENDPOINT": f" {LOCAL}:/lus=/,/lus/proj/me=/~/ "})
    assert ep.id == LOCAL
    assert ep.path("/lus/proj/me/run/a.dat") == "/~/run/a.dat"
    assert ep.path("/lus/other/b/") == "/other/b/"
    assert ep.path("/lus/proj/me") == "/~/"
    with pytest.raises(TransferError, match="/home/x is under no prefix that SLUICE_GLOBUS_LOCAL_ENDPOINT maps"):
        ep.path("/home/x")


@pytest.mark.parametrize(
    ("url", "words"),
    [("globus://not-an-id/a", "is not a Globus endpoint id"), (f"globus://{EP_A}/", "give globus://ENDPOINT_ID"),
     (f"globus://{EP_A}/a/*.dat", "does not expand globs")],
)
def test_bad_urls(url: str, words: str) -> None:
    with pytest.raises(TransferError, match=words):
        parse_url(url)


def test_bad_checksums_and_directories(tmp_path: Path, service: FakeTransferService) -> None:
    t = _transfer(service, {"SLUICE_GLOBUS_LOCAL_ENDPOINT": LOCAL})
    with pytest.raises(TransferError, match="Globus checks only md5, sha1, sha256, sha512 checksums"):
        t.plan([Want(f"globus://{EP_A}/a", str(tmp_path), checksum="blake2b:00")])
    with pytest.raises(TransferError, match="a checksum names one file"):
        t.plan([Want(f"globus://{EP_A}/d/", str(tmp_path), checksum="md5:00")])
    with pytest.raises(TransferError, match="stage-out source not found"):
        t.plan([Item(str(tmp_path / "none*"), f"globus://{EP_A}/x", put=True)])


def test_missing_credentials_name_what_to_run(tmp_path: Path) -> None:
    t = GlobusTransfer(environ={"SLUICE_GLOBUS_LOCAL_ENDPOINT": LOCAL}, storage=tmp_path / "none.db")
    with pytest.raises(TransferError) as exc:
        t.copy(f"globus://{EP_A}/a", tmp_path)
    msg = str(exc.value)
    assert msg.startswith("no Globus credentials: run `globus login`") and "SLUICE_GLOBUS_TOKEN" in msg
    assert "\n" not in msg and not exc.value.transient
    assert not (tmp_path / "none.db").exists()  # the CLI's storage is only read


def test_the_environment_token_comes_first_and_is_never_shown(tmp_path: Path) -> None:
    assert access_token({"SLUICE_GLOBUS_TOKEN": f" {SECRET} "}, None) == (SECRET, "SLUICE_GLOBUS_TOKEN")
    t = GlobusTransfer(environ={"SLUICE_GLOBUS_TOKEN": SECRET, "SLUICE_GLOBUS_LOCAL_ENDPOINT": LOCAL}, storage=None)
    service = FakeTransferService()
    client = t.client()
    assert t.client() is client  # built once per token
    client.transport.session.mount("https://", service)
    client.retry_config.max_retries = 0
    # a 401 whose text even echoes the token: the message names the fix, never the value
    service.fail[("GET", "/v0.10/submission_id")] = (
        401, {"code": "AuthenticationFailed", "message": f"Token {SECRET} is not active"})
    with pytest.raises(TransferError) as exc:
        t.copy(f"globus://{EP_A}/a", tmp_path)
    msg = str(exc.value)
    assert SECRET not in msg and "globus login" in msg and "SLUICE_GLOBUS_TOKEN" in msg and not exc.value.transient
    assert service.auth == [f"Bearer {SECRET}"]
    h = t.submit([Item(f"globus://{EP_A}/a", str(tmp_path))])
    assert h.outcome is not None and SECRET not in h.outcome.message
    service.fail[("GET", "/v0.10/task/t1")] = (403, {"code": "PermissionDenied", "message": f"no ({SECRET})"})
    with pytest.raises(TransferError) as exc:
        t.poll(TransferHandle("globus", "t1"))
    assert SECRET not in str(exc.value) and "PermissionDenied" in str(exc.value)


def test_server_errors_are_transient(tmp_path: Path, service: FakeTransferService) -> None:
    t = _transfer(service, {"SLUICE_GLOBUS_LOCAL_ENDPOINT": LOCAL})
    service.fail[("POST", "/v0.10/transfer")] = (503, {"code": "ServiceUnavailable", "message": "maintenance"})
    h = t.submit([Item(f"globus://{EP_A}/a", str(tmp_path))])
    assert h.outcome is not None and h.outcome.transient and "503 ServiceUnavailable: maintenance" in h.outcome.message


def test_a_refused_second_task_cancels_the_first(tmp_path: Path, service: FakeTransferService) -> None:
    t = _transfer(service, {"SLUICE_GLOBUS_LOCAL_ENDPOINT": LOCAL})
    real = service.send

    def second_refused(request: Any, **kw: Any) -> Any:
        if request.method == "POST" and request.url.endswith("/transfer") and service.submitted == 1:
            service.fail[("POST", "/v0.10/transfer")] = (
                400, {"code": "ClientError.NotFound", "message": "no endpoint"})
        return real(request, **kw)

    service.send = second_refused  # type: ignore[method-assign]
    h = t.submit([Item(f"globus://{EP_A}/a", str(tmp_path)), Item(f"globus://{EP_B}/b", str(tmp_path))])
    assert h.outcome is not None and not h.outcome.transient and "ClientError.NotFound" in h.outcome.message
    assert service.calls[-1][1] == "/v0.10/task/aaaaaaaa-0000-4000-8000-000000000001/cancel"


def _store(path: Path, namespace: str, expires: float) -> None:
    store = SQLiteTokenStorage(path, namespace=namespace)
    store.store_token_data_by_resource_server({"transfer.api.globus.org": TokenStorageData(
        "transfer.api.globus.org", None, "urn:globus:auth:scope:transfer.api.globus.org:all", "cli-token",
        "refresh", int(expires), "Bearer")})
    store.close()


def test_the_globus_cli_tokens_are_read(tmp_path: Path) -> None:
    db = tmp_path / "storage.db"
    _store(db, "userprofile/production", time.time() + 3600)
    _store(db, "userprofile/production/work", time.time() - 10)
    assert access_token({}, db) == ("cli-token", f"the globus CLI's login ({db})")
    before = db.read_bytes()
    with pytest.raises(TransferError, match="has expired: run `globus task list`.*`globus login --force`"):
        access_token({"GLOBUS_PROFILE": "work"}, db)
    with pytest.raises(TransferError, match=r"no Globus transfer token in .* \(userprofile/sandbox\): run `globus"):
        access_token({"GLOBUS_SDK_ENVIRONMENT": "sandbox"}, db)
    assert db.read_bytes() == before


def test_registered_and_lazy(tmp_path: Path) -> None:
    assert transfers.TRANSFERS["globus"] == "sluice.transfers.globus:GlobusTransfer"
    code = (
        "import sys\n"
        "sys.modules['globus_sdk'] = None  # as if not installed\n"
        "from pathlib import Path\n"
        "from sluice import transfers\n"
        "t = transfers.get('globus')\n"
        "print('globus_sdk' in sys.modules and sys.modules['globus_sdk'] is not None)\n"
        "try:\n"
        f"    transfers.copy('globus://{EP_A}/a', Path('.'))\n"
        "except transfers.TransferError as e:\n"
        "    print(e, e.transient)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path,
                         env={**os.environ, "SLUICE_GLOBUS_LOCAL_ENDPOINT": LOCAL}).stdout.splitlines()
    assert out == ["False", f"{INSTALL_HINT} False"]
    code = "import sys; import sluice.transfers.globus; print('globus_sdk' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
