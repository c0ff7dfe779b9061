"""Tool sources: local folders and git repositories fetched from real git servers on 127.0.0.1 (no mocks)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

from runner.errors import SourceError
from runner.manifest import load_manifest
from runner.sources import ToolFolder, _parse_git_source, find_tool_folders
from tests.fixtures_git import git, write_tool
from tests.helpers import free_port


def names(folders: list[ToolFolder]) -> list[str]:
    return [f.path.name for f in folders]


def find(source: str, cache_dir: Path) -> tuple[list[ToolFolder], list[str]]:
    lines: list[str] = []
    return find_tool_folders(source, cache_dir=cache_dir, progress=lines.append), lines


def cache_entries(cache_dir: Path) -> list[str]:
    """Everything in the git cache, relative: checkouts (URL/COMMIT), refs.json files and any leftover."""
    root = cache_dir / "git"
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for url_dir in root.iterdir() for p in [url_dir, *url_dir.iterdir()])


def leftovers(cache_dir: Path) -> list[str]:
    """Anything but complete checkouts and refs.json files: temp folders, partial checkouts, empty URL folders."""
    root = cache_dir / "git"
    found = []
    for url_dir in root.iterdir() if root.exists() else []:
        entries = list(url_dir.iterdir())
        if not entries:
            found.append(url_dir.name)
        for entry in entries:
            complete = entry.name == "refs.json" or (len(entry.name) == 40 and not (entry / ".git").exists())
            if not complete:
                found.append(f"{url_dir.name}/{entry.name}")
    return found


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"


# --- local folders ------------------------------------------------------------------------------


def test_a_tool_folder_is_itself(tmp_path, cache_dir):
    tool = write_tool(tmp_path / "hello", "hello")
    (tool / "tests" / "data").mkdir(parents=True)
    write_tool(tool / "tests" / "data" / "fixture", "fixture")  # inside a tool: belongs to it

    assert find_tool_folders(str(tool), cache_dir=cache_dir) == [ToolFolder(tool, str(tool), None)]
    assert load_manifest(tool).name == "hello"
    assert not cache_dir.exists()


def test_a_folder_of_tools_lists_every_tool_below_it_sorted(tmp_path, cache_dir):
    root = tmp_path / "tools"
    for rel in ["zulu", "alpha", "group/mike", "group/bravo", "alpha2/deeper/charlie"]:
        write_tool(root / rel, Path(rel).name)
    for skipped in [".git/x", "node_modules/pkg", ".venv/lib", "__pycache__/x", ".hidden/tool", "group/.cache/t"]:
        write_tool(root / skipped, "skipped")

    folders = find_tool_folders(str(root), cache_dir=cache_dir)

    assert [f.path.relative_to(root).as_posix() for f in folders] == [
        "alpha",
        "alpha2/deeper/charlie",
        "group/bravo",
        "group/mike",
        "zulu",
    ]
    assert {f.source for f in folders} == {str(root)} and {f.commit for f in folders} == {None}


def test_relative_and_home_paths(tmp_path, cache_dir, monkeypatch):
    write_tool(tmp_path / "home" / "mytools" / "hello", "hello")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path / "home")

    assert names(find_tool_folders("~/mytools", cache_dir=cache_dir)) == ["hello"]
    [folder] = find_tool_folders("mytools/hello", cache_dir=cache_dir)
    assert folder.path == tmp_path / "home" / "mytools" / "hello" and folder.source == "mytools/hello"


def test_missing_folder(tmp_path, cache_dir):
    with pytest.raises(SourceError) as err:
        find_tool_folders(str(tmp_path / "nope"), cache_dir=cache_dir)
    assert str(err.value).startswith(f"tool folder not found: {tmp_path / 'nope'}")
    assert "git URL" in str(err.value)


def test_folder_without_any_tool(tmp_path, cache_dir):
    (tmp_path / "empty" / "node_modules" / "pkg").mkdir(parents=True)
    write_tool(tmp_path / "empty" / "node_modules" / "pkg", "hidden-in-node-modules")
    with pytest.raises(SourceError, match=r"no pocket.json in .*empty or any folder below it"):
        find_tool_folders(str(tmp_path / "empty"), cache_dir=cache_dir)


def test_a_file_is_not_a_folder(tmp_path, cache_dir):
    tool = write_tool(tmp_path / "hello", "hello")
    with pytest.raises(SourceError, match=r"is a file, not a folder .*give its folder: .*hello"):
        find_tool_folders(str(tool / "pocket.json"), cache_dir=cache_dir)


# --- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "url", "ref", "subdir"),
    [
        ("https://host/o/r", "https://host/o/r", None, None),
        ("https://host/o/r.git@v1#tools/a", "https://host/o/r.git", "v1", "tools/a"),
        ("ssh://git@host/repo.git@v1", "ssh://git@host/repo.git", "v1", None),
        ("ssh://git@host/repo.git", "ssh://git@host/repo.git", None, None),
        ("git@host:owner/repo.git@feature/x#sub", "git@host:owner/repo.git", "feature/x", "sub"),
        ("https://user:tok@host/o/r@main", "https://user:tok@host/o/r", "main", None),
        ("file:///srv/o/r.git@1a2b3c4", "file:///srv/o/r.git", "1a2b3c4", None),
        ("git://host/o/r#a/b/", "git://host/o/r", None, "a/b"),
    ],
)
def test_pinning_syntax(source, url, ref, subdir):
    spec = _parse_git_source(source)
    assert (spec.url, spec.ref, spec.subdir, spec.tree_rest) == (url, ref, subdir, None)


@pytest.mark.parametrize("source", ["tools/hello", "./git@host:x", "C:\\tools", "~/t", "host:path", "/abs@v1"])
def test_folders_are_not_git_urls(source):
    assert _parse_git_source(source) is None


def test_tree_urls_are_split_later():
    spec = _parse_git_source("https://github.com/o/r/tree/feature/x/tools/a/")
    assert (spec.url, spec.ref, spec.tree_rest) == ("https://github.com/o/r", None, "feature/x/tools/a")
    with pytest.raises(SourceError, match="already names the ref"):
        _parse_git_source("https://github.com/o/r/tree/main@v1")
    with pytest.raises(SourceError, match="nothing after '@'"):
        _parse_git_source("https://github.com/o/r@")


# --- git sources --------------------------------------------------------------------------------


def test_git_daemon_default_branch(git_remote, cache_dir):
    main = git_remote.commits["main"]

    folders, lines = find(git_remote.git_url, cache_dir)

    assert names(folders) == ["alpha", "beta", "gamma"]
    assert {f.commit for f in folders} == {main} and {f.source for f in folders} == {git_remote.git_url}
    assert lines == [f"fetching {git_remote.git_url} @ default branch -> {main[:7]} ..."]
    checkout = folders[0].path.parent.parent
    assert checkout.name == main and not (checkout / ".git").exists()
    assert load_manifest(folders[0].path).name == "alpha"
    memory = json.loads((checkout.parent / "refs.json").read_text())
    assert memory["url"] == git_remote.git_url and memory["refs"]["HEAD"]["commit"] == main

    again, lines = find(git_remote.git_url, cache_dir)
    assert again == folders
    assert lines == [f"using cached {main[:7]} of {git_remote.git_url} (default branch)"]


def test_dumb_http_bare_repository_url(git_remote, cache_dir):
    folders, lines = find(git_remote.http_url, cache_dir)
    assert names(folders) == ["alpha", "beta", "gamma"]
    assert folders[0].commit == git_remote.commits["main"]
    assert lines == [f"fetching {git_remote.http_url} @ default branch -> {git_remote.commits['main'][:7]} ..."]


def test_pinned_to_an_annotated_tag(git_remote, cache_dir):
    folders, lines = find(f"{git_remote.http_url}@v1", cache_dir)
    assert names(folders) == ["alpha", "beta"]
    assert folders[0].commit == git_remote.commits["v1"]  # the commit, not the tag object
    assert lines == [f"fetching {git_remote.http_url} @ v1 -> {git_remote.commits['v1'][:7]} ..."]


@pytest.mark.parametrize("length", [40, 8])
def test_pinned_to_a_commit(git_remote, cache_dir, length):
    commit = git_remote.commits["dev"]
    folders, _ = find(f"{git_remote.git_url}@{commit[:length].upper()}", cache_dir)
    assert names(folders) == ["delta", "alpha", "beta", "gamma"]
    assert {f.commit for f in folders} == {commit}


def test_pinned_to_a_branch_and_folder(git_remote, cache_dir):
    folders, _ = find(f"{git_remote.git_url}@dev#extra", cache_dir)
    assert names(folders) == ["delta"] and folders[0].commit == git_remote.commits["dev"]
    assert folders[0].path.relative_to(folders[0].path.parents[1]).as_posix() == "extra/delta"


def test_tree_url_with_a_slash_in_the_branch(git_remote, cache_dir):
    # The tag `feature` is also a prefix of "feature/x/nested": the longest ref wins.
    source = f"{git_remote.http_url}/tree/feature/x/nested"
    folders, lines = find(source, cache_dir)
    assert names(folders) == ["zeta"] and folders[0].commit == git_remote.commits["feature/x"]
    assert lines == [f"fetching {git_remote.http_url} @ feature/x -> {git_remote.commits['feature/x'][:7]} ..."]

    commit = git_remote.commits["v1"]
    folders, _ = find(f"{git_remote.http_url}/tree/{commit[:10]}/tools/beta", cache_dir)
    assert names(folders) == ["beta"] and folders[0].commit == commit

    with pytest.raises(SourceError) as err:
        find(f"{git_remote.http_url}/tree/nope/tools", cache_dir)
    assert str(err.value) == (
        f"cannot fetch {git_remote.http_url}: no branch, tag or commit starts 'nope/tools' "
        "(branches: dev, feature/x, main; tags: feature, v1). Check the /tree/ part of the URL."
    )


def test_file_url(git_remote, cache_dir):
    folders, _ = find(f"{git_remote.file_url}@v1#tools", cache_dir)
    assert names(folders) == ["alpha", "beta"] and folders[0].commit == git_remote.commits["v1"]


def test_the_same_repository_written_differently_shares_the_cache(git_remote, cache_dir):
    find(git_remote.git_url, cache_dir)
    _, lines = find(git_remote.git_url.removesuffix(".git") + "/", cache_dir)
    assert lines[0].startswith("using cached")
    assert len(list((cache_dir / "git").iterdir())) == 1


def test_subdir_that_is_missing_or_outside(git_remote, cache_dir):
    with pytest.raises(SourceError, match=r"there is no folder 'nope' in .* @ [0-9a-f]{7}\. Check the part after '#'"):
        find(f"{git_remote.git_url}#nope", cache_dir)
    with pytest.raises(SourceError, match="points outside the repository"):
        find(f"{git_remote.git_url}#../..", cache_dir)
    with pytest.raises(SourceError) as err:
        find(f"{git_remote.git_url}@v1#docs", cache_dir)
    where = f"{git_remote.git_url} @ {git_remote.commits['v1'][:7]}"
    checkout = cache_dir / "git" / next(p.name for p in (cache_dir / "git").iterdir()) / git_remote.commits["v1"]
    assert str(err.value) == (
        f"{git_remote.git_url}@v1#docs: no pocket.json in folder 'docs' of {where} or any folder below it. "
        f"Check the repository, ref and folder (`URL@REF#FOLDER`). (Read from the cached copy {checkout}: delete "
        "that folder to fetch it again.)"
    )


def test_offline_uses_the_cache(serve_http, cache_dir):
    server = serve_http()
    url = f"{server.url}/o/r"
    dev = find(f"{url}@dev", cache_dir)[0][0].commit
    v1 = find(f"{url}@v1", cache_dir)[0][0].commit
    server.stop()

    folders, lines = find(f"{url}@{v1}", cache_dir)  # a full commit needs no network
    assert names(folders) == ["alpha", "beta"] and lines == [f"using cached {v1[:7]} of {url}"]

    folders, lines = find(f"{url}@dev", cache_dir)  # a branch: its last known commit, with a warning
    assert folders[0].commit == dev
    [line] = lines
    assert line.startswith(f"warning: {url}: could not reach host; using dev -> {dev[:7]} as last resolved on 20")
    assert "may be out of date" in line

    with pytest.raises(SourceError) as err:
        find(f"{url}@main", cache_dir)  # never resolved before
    assert str(err.value) == f"cannot fetch {url}: could not reach host. Check the URL and your network connection."


def test_offline_tree_url_uses_the_remembered_refs(serve_http, cache_dir):
    server = serve_http()
    url = f"{server.url}/o/r"
    commit = find(f"{url}/tree/feature/x/nested", cache_dir)[0][0].commit
    server.stop()
    folders, lines = find(f"{url}/tree/feature/x/nested/zeta", cache_dir)
    assert names(folders) == ["zeta"] and folders[0].commit == commit
    assert lines == [lines[0]] and lines[0].startswith(f"warning: {url}: could not reach host; using feature/x")


# --- failures -----------------------------------------------------------------------------------


def test_unreachable_host(cache_dir):
    port = free_port()
    for url in [f"git://127.0.0.1:{port}/o/r.git", f"http://127.0.0.1:{port}/o/r"]:
        with pytest.raises(SourceError) as err:
            find(url, cache_dir)
        assert str(err.value) == f"cannot fetch {url}: could not reach host. Check the URL and your network connection."
    assert cache_entries(cache_dir) == []


def test_missing_ref_lists_the_branches_and_tags(git_remote, cache_dir):
    with pytest.raises(SourceError) as err:
        find(f"{git_remote.git_url}@nope", cache_dir)
    assert str(err.value) == (
        f"cannot fetch {git_remote.git_url}: ref 'nope' not found "
        "(branches: dev, feature/x, main; tags: feature, v1). Use a branch, tag or commit after '@'."
    )
    assert cache_entries(cache_dir) == []


@pytest.mark.parametrize("server", ["git", "http", "file"])
def test_missing_repository(git_remote, cache_dir, server):
    url = {"git": git_remote.git_url, "http": git_remote.http_url, "file": git_remote.file_url}[server]
    url = url.replace("/o/r", "/o/nope")
    with pytest.raises(SourceError) as err:
        find(url, cache_dir)
    assert str(err.value) == (
        f"cannot fetch {url}: repository not found. Check the URL, and that you have access to the repository."
    )
    assert cache_entries(cache_dir) == []


@pytest.mark.parametrize("server", ["git", "http"])
def test_a_failed_fetch_leaves_nothing_in_the_cache(git_remote, cache_dir, server):
    url = git_remote.git_url if server == "git" else git_remote.http_url
    missing = "0123456789abcdef" * 2 + "01234567"
    with pytest.raises(SourceError, match=rf"commit {missing} is not in the repository"):
        find(f"{url}@{missing}", cache_dir)
    with pytest.raises(SourceError, match=r"no commit starting with 'abcdef1' and no such branch or tag"):
        find(f"{url}@abcdef1", cache_dir)
    assert cache_entries(cache_dir) == []

    find(f"{url}@v1", cache_dir)  # a failure next to a good entry leaves the good entry alone
    with pytest.raises(SourceError):
        find(f"{url}@{missing}", cache_dir)
    assert leftovers(cache_dir) == []
    assert len([e for e in cache_entries(cache_dir) if e.endswith(git_remote.commits["v1"])]) == 1


def test_empty_repository(tmp_path, cache_dir):
    bare = tmp_path / "empty.git"
    git("init", "-q", "--bare", str(bare), cwd=tmp_path)
    with pytest.raises(SourceError) as err:
        find(bare.as_uri(), cache_dir)
    assert str(err.value) == f"cannot fetch {bare.as_uri()}: the repository is empty (no branches or tags)."


def test_credentials_never_show(git_remote, cache_dir):
    port = free_port()
    http = git_remote.http.url.replace("http://", "http://alice:s3cr3t-t0ken@")
    for url, shown in [
        (f"http://alice:s3cr3t-t0ken@127.0.0.1:{port}/o/r", f"http://[redacted]@127.0.0.1:{port}/o/r"),
        (f"http://ghp_s3cr3t-t0ken@127.0.0.1:{port}/o/r", f"http://[redacted]@127.0.0.1:{port}/o/r"),
        (f"{http}/o/nope", git_remote.http_url.replace("http://", "http://[redacted]@").replace("/o/r", "/o/nope")),
        (f"ssh://git:s3cr3t-t0ken@127.0.0.1:{port}/o/r.git@v1", f"ssh://git:[redacted]@127.0.0.1:{port}/o/r.git"),
    ]:
        lines: list[str] = []
        with pytest.raises(SourceError) as err:
            find_tool_folders(url, cache_dir=cache_dir, progress=lines.append)
        assert str(err.value).startswith(f"cannot fetch {shown}: ")
        assert "s3cr3t" not in str(err.value) + "".join(lines)

    folders, lines = find(f"{http}/o/r@v1", cache_dir)  # credentials a server ignores still work
    assert names(folders) == ["alpha", "beta"]
    assert "s3cr3t" not in "".join(lines) + "".join(p.read_text() for p in (cache_dir / "git").glob("*/refs.json"))


def test_concurrent_fetches_of_the_same_commit_both_succeed(git_remote, cache_dir):
    barrier = threading.Barrier(4)
    results: list[object] = [None] * 4

    def fetch(i: int) -> None:
        barrier.wait()
        try:
            results[i] = find_tool_folders(f"{git_remote.git_url}@dev", cache_dir=cache_dir)
        except Exception as exc:
            results[i] = exc

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert all(isinstance(r, list) and names(r) == ["delta", "alpha", "beta", "gamma"] for r in results), results
    assert {r[0].commit for r in results} == {git_remote.commits["dev"]}
    assert leftovers(cache_dir) == []
    [url_dir] = (cache_dir / "git").iterdir()
    assert sorted(p.name for p in url_dir.iterdir()) == [git_remote.commits["dev"], "refs.json"]


def test_a_fetch_takes_only_the_one_commit_it_needs(git_remote, cache_dir, monkeypatch):
    import runner.sources

    real_git, fetches = runner.sources._git, []

    def recording_git(args, **options):
        try:
            return real_git(args, **options)
        finally:
            if args[0] == "fetch":
                fetches.append(args)

    monkeypatch.setattr(runner.sources, "_git", recording_git)
    folders, _ = find(f"{git_remote.git_url}@dev", cache_dir)
    assert names(folders) == ["delta", "alpha", "beta", "gamma"]
    assert len(fetches) == 1, fetches  # no fallback to every branch with its whole history
    assert fetches[0][:6] == ["fetch", "-q", "--no-tags", "--depth", "1", "--"]


def test_a_damaged_cached_copy_says_where_it_is(git_remote, cache_dir):
    [folder, *_] = find(f"{git_remote.git_url}@v1", cache_dir)[0]
    checkout = folder.path.parents[1]
    for child in checkout.iterdir():
        shutil.rmtree(child) if child.is_dir() else child.unlink()
    with pytest.raises(SourceError) as err:
        find(f"{git_remote.git_url}@v1", cache_dir)
    assert f"Read from the cached copy {checkout}: delete that folder to fetch it again." in str(err.value)


def test_a_deleted_checkout_is_fetched_again(git_remote, cache_dir):
    [folder, *_] = find(f"{git_remote.git_url}@v1", cache_dir)[0]
    shutil.rmtree(folder.path.parents[1])
    folders, lines = find(f"{git_remote.git_url}@v1", cache_dir)
    assert names(folders) == ["alpha", "beta"] and lines[0].startswith("fetching")


def test_a_server_that_never_answers_times_out(cache_dir, monkeypatch):
    monkeypatch.setattr("runner.sources.GIT_TIMEOUT_SECONDS", 0.5)
    with socket.socket() as silent:  # accepts connections (backlog) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        url = f"git://127.0.0.1:{silent.getsockname()[1]}/o/r.git"
        started = time.monotonic()
        with pytest.raises(SourceError) as err:
            find(url, cache_dir)
    assert time.monotonic() - started < 5
    assert (
        str(err.value)
        == f"cannot fetch {url}: git gave no answer within 0.5 s. Check the URL and your network connection."
    )


def test_a_source_cannot_smuggle_options_into_git(tool_repo, tmp_path, cache_dir, monkeypatch):
    """`--upload-pack=CMD@x:y` looks scp-like; it must be a (missing) folder, never a git option."""
    work = tmp_path / "work"
    git("clone", "-q", str(tool_repo.base / "o" / "r.git"), str(work), cwd=tmp_path)  # a repo with a local remote
    monkeypatch.chdir(work)
    for source in ("--upload-pack=touch${IFS}pwned@x:y", "-utouch${IFS}pwned@x:y"):
        with pytest.raises(SourceError, match="tool folder not found"):
            find_tool_folders(source, cache_dir=cache_dir)
    assert not (work / "pwned").exists()
