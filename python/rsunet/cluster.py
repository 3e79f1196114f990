"""Scale-out on dask.distributed: the same maps from many processes or machines.

``cluster=`` in :func:`rsunet.predict_raster` (and the CLI's ``--cluster``, the workflow's
``cluster:``) takes ``None`` (one process, the default), ``"local"`` or ``"local:N"`` (a
``LocalCluster`` of N worker processes on this machine, one thread each, TensorFlow
limited to match), a scheduler address ``"tcp://host:8786"`` or, in Python, a
``distributed.Client``.

Many scenes are one task each. One scene is cut into blocks of whole windows
(the block layout of :mod:`rsunet.prediction`), one task each; every block is computed from all the
windows touching it, so its pixels are the bits a single process gives, and the assembled
GeoTIFF is byte-identical whatever the number of workers (for a model whose output for a
window does not depend on the other windows of its call: ``batch_size=1`` on every CPU;
else the model's own float32 rounding, up to 5e-7 seen, separates them). Tasks write into
the output's hidden partial folder, which is why every worker must reach the model, the images and the
output folder by the same paths (a shared file system; checked before any work). A task
lost with its worker is run again elsewhere and continues from that block's last saved
band; a whole run started again computes only the unfinished blocks.

Each worker loads a model once (cached by the model file's path and content digest, or by
the scattered object's key) and binds it to a scene once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import warnings
from pathlib import Path

from rsunet.errors import DependencyError, InputError, WorkerPathError

__all__ = ["connect", "local_cluster", "session", "check_spec"]

BLOCK = 2048  # a block's core, rows and columns, when a cluster maps one scene
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                    "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")

_MODELS: dict = {}  # on a worker: {model key: model}
_PREPARED: dict = {}  # on a worker: {(model key, precision, folded, uncertainty, passes): model as run}
_SCENE_MODELS: dict = {}  # on a worker: {(model key, prepared model, scene key): bound model}


def _distributed():
    try:
        import distributed
    except ImportError as exc:
        raise DependencyError(
            "cluster= needs dask.distributed, an optional dependency: "
            "pip install 'rsunet[dask]' (make setup installs it)") from exc
    return distributed


def local_cluster(workers=None, dashboard=True):
    """A ``LocalCluster`` on loopback: ``workers`` processes (default: one per core), one
    thread each, with TensorFlow's and the BLAS libraries' threads set to one.

    Returns a ``distributed.Client``; closing it (``client.close()``, or ``with``) does not
    stop the cluster: ``client.cluster.close()`` does.
    """
    distributed = _distributed()
    n = workers or os.cpu_count() or 1
    import dask

    _own_libpython_first()
    # set before each worker process is spawned (the user's own values win)
    with dask.config.set({f"distributed.nanny.pre-spawn-environ.{name}": "1"
                          for name in THREAD_VARIABLES}), warnings.catch_warnings():
        # without a dashboard the scheduler still serves /health on 127.0.0.1:8787, or
        # on another port when that one is taken, with a warning that only adds noise
        warnings.filterwarnings("ignore", message="Port 8787 is already in use")
        cluster = distributed.LocalCluster(
            n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
            dashboard_address="127.0.0.1:0" if dashboard else None,
            silence_logs=logging.ERROR)
    return distributed.Client(cluster)


def _own_libpython_first():
    """Worker processes must load this Python's libpython, whatever LD_LIBRARY_PATH holds.

    Embedded in R, LD_LIBRARY_PATH starts with the system's library folder (R's ldpaths):
    a Python built elsewhere (pyenv) would start its workers with the system's libpython
    of the same minor version, whose missing symbols break ``ssl`` (R/install.R's
    ``.with_own_libpython()`` does the same for pip). Set in this process's environment,
    not only around the start: a nanny re-spawns a lost worker with that environment.
    """
    import sysconfig

    old = os.environ.get("LD_LIBRARY_PATH")
    libdir = sysconfig.get_config_var("LIBDIR")
    if old and libdir and os.path.isdir(libdir) and not old.startswith(libdir + ":"):
        os.environ["LD_LIBRARY_PATH"] = f"{libdir}:{old}"


@contextlib.contextmanager
def connect(cluster, progress=True):
    """Yield a ``distributed.Client`` for a ``cluster=`` argument; one this call started
    (``"local"``, ``"local:N"``) is shut down on leaving, a given one is left running."""
    check_spec(cluster)
    distributed = _distributed()
    if isinstance(cluster, distributed.Client):
        client, owned = cluster, False
    elif cluster.startswith("local"):
        count = cluster.partition(":")[2]
        client, owned = local_cluster(int(count) if count else None), True
    else:
        try:
            client, owned = distributed.Client(cluster, timeout="30s"), True
        except (OSError, TimeoutError) as exc:
            raise InputError(f"cannot reach the dask scheduler at {cluster}: {exc}") from exc
    try:
        if progress and owned and _has_dashboard(client):  # a given client: known already
            print(f"rsunet: dask dashboard at {client.dashboard_link}", flush=True)
        yield client
    finally:
        if owned:
            started = getattr(client, "cluster", None)
            client.close()
            if started is not None:
                started.close()


@contextlib.contextmanager
def session(cluster, progress=True):
    """:func:`connect`, or ``None`` for ``cluster=None``: one cluster for a whole run."""
    if cluster is None:
        yield None
        return
    with connect(cluster, progress) as client:
        yield client


def check_spec(cluster):
    """Refuse a ``cluster=`` value that is none of the accepted forms (without starting
    anything); a ``distributed.Client`` object passes."""
    if cluster is None or (not isinstance(cluster, str) and hasattr(cluster, "submit")):
        return
    if isinstance(cluster, str):
        count = cluster.partition(":")[2] if cluster.startswith("local:") else ""
        if cluster == "local" or (count.isdigit() and int(count) >= 1) or \
                (not cluster.startswith("local") and "://" in cluster):
            return
    raise InputError(f"cluster must be None, 'local', 'local:N' (N worker processes), a "
                     f"scheduler address ('tcp://host:8786') or a distributed.Client, "
                     f"got {cluster!r}")


def _has_dashboard(client):
    try:
        return "dashboard" in client.scheduler_info().get("services", {})
    except Exception:  # an old scheduler: no services listed
        return False


# ---- what workers must reach --------------------------------------------------------

def check_paths(client, reads, writes):
    """Refuse, before any work, a path some worker cannot open.

    ``reads``: files every worker must read; ``writes``: folders where every worker must
    create files (the nearest existing parent is checked).
    """
    problems = client.run(_path_problems, [os.fspath(p) for p in reads],
                          [os.fspath(p) for p in writes])
    for worker, missing in sorted(problems.items()):
        if missing:
            raise WorkerPathError(
                f"dask worker {worker} cannot {missing[0]}; on a cluster the model, the "
                "images and the output folder must be on a file system every worker "
                "reaches under the same path (see docs/scale-out.md)")


def _path_problems(reads, writes):
    problems = [f"read {p}" for p in reads if not os.access(p, os.R_OK)]
    for folder in writes:
        existing = Path(folder)
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not os.access(existing, os.W_OK):
            problems.append(f"write in {folder}")
    return problems


# ---- models on workers --------------------------------------------------------------

class ModelRef:
    """How a worker gets the call's model: a file it loads, or an object scattered to it."""

    def __init__(self, client, model):
        if isinstance(model, (str, os.PathLike)):
            self.path, self.scattered = os.fspath(model), None
            self.key = f"file:{Path(model).resolve()}:{_file_digest(model)}"
        else:
            self.path = None
            self.scattered = client.scatter(model, broadcast=True, hash=False)
            self.key = f"object:{self.scattered.key}"


def _file_digest(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def worker_model(key, path, scattered, params):
    """The model on this worker, loaded (or unpacked) once per worker and prepared as
    ``params`` run it (precision, Monte Carlo dropout)."""
    from rsunet.prediction import prepared

    run = (key, params.precision, params.fold_batch_norm, params.uncertainty, params.mc_passes)
    if run not in _PREPARED:
        _PREPARED[run] = prepared(_loaded(key, path, scattered), params)
    return _PREPARED[run]


def _loaded(key, path, scattered):
    if key not in _MODELS:
        if path is not None:
            if not os.access(path, os.R_OK):
                raise WorkerPathError(f"dask worker cannot read the model {path}: it must be "
                                      "on a file system every worker reaches")
            _limit_tensorflow_threads()
            from rsunet.prediction import as_model

            _MODELS[key] = as_model(path)
        else:
            _MODELS[key] = scattered
    return _MODELS[key]


def scene_model(key, model, src, path):
    """``model`` bound to the scene at ``path`` (its band percentiles), once per worker."""
    from rsunet.artefact import for_raster

    stat = os.stat(path)
    scene = (key, id(model), str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)
    if scene not in _SCENE_MODELS:
        _SCENE_MODELS[scene] = for_raster(model, src)
    return _SCENE_MODELS[scene]


def _limit_tensorflow_threads():
    """One TensorFlow thread per worker thread, before TensorFlow starts (once)."""
    try:
        import distributed

        threads = distributed.get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        return
    try:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except (ImportError, RuntimeError):  # no TensorFlow, or it has started already
        pass


def readable(path):
    """Raise WorkerPathError if this worker cannot read ``path``."""
    if not os.access(path, os.R_OK):
        raise WorkerPathError(f"dask worker cannot read {path}: it must be on a file system "
                              "every worker reaches under the same path")


def as_completed_with_progress(client, futures, total, desc, progress, unit):
    """Each finished future's result, in completion order, with one progress bar; on the
    first failure the rest are cancelled and the error raised."""
    import distributed
    from tqdm.auto import tqdm

    with tqdm(total=total, initial=total - len(futures), desc=desc, unit=unit,
              disable=not progress, leave=False) as bar:
        try:
            for future in distributed.as_completed(futures):
                yield future.result()
                bar.update(1)
        except BaseException:
            client.cancel(futures)
            raise


# ---- one task per item ---------------------------------------------------------------

def map_tasks(cluster, func, items, args, what, reads=(), writes=()):
    """``[func(*item, *args) for item in items]`` on a cluster, one task per item, in order.

    ``reads`` and ``writes`` are checked on every worker first (:func:`check_paths`).
    """
    with connect(cluster) as client:
        check_paths(client, reads, writes)
        futures = [client.submit(func, *item, *args, pure=False) for item in items]
        list(as_completed_with_progress(client, futures, len(futures), what, True, what))
        return [f.result() for f in futures]


# ---- predict_raster on a cluster ----------------------------------------------------

def predict_on_cluster(cluster, model_arg, model, scenes, params, resume, progress):
    """:func:`rsunet.predict_raster`'s work on a cluster: ``[targets]`` per scene."""
    from rsunet.prediction import predict_one

    with connect(cluster, progress) as client:
        path_model = isinstance(model_arg, (str, os.PathLike))
        check_paths(client, [p for p, _ in scenes] + ([model_arg] if path_model else []),
                    sorted({str(next(iter(t.values())).parent) for _, t in scenes}))
        ref = ModelRef(client, model_arg)  # a path, or the loaded model before preparing
        if len(scenes) == 1:
            path, targets = scenes[0]
            return [predict_one(model, path, targets, params, resume, progress,
                                 _Blocks(client, ref, progress))]
        futures = [client.submit(_scene_task, ref.key, ref.path, ref.scattered, path, targets,
                                 params, resume, pure=False)
                   for path, targets in scenes]
        list(as_completed_with_progress(client, futures, len(futures), "scenes", progress,
                                        "scene"))
        return [f.result() for f in futures]


def _scene_task(key, model_path, scattered, path, targets, params, resume):
    from rsunet.prediction import predict_one

    model = worker_model(key, model_path, scattered, params)
    readable(path)
    return predict_one(model, path, targets, params, resume, progress=False)


class _Blocks:
    """Computes a scene's unfinished blocks on the cluster, one task each."""

    block_rows = BLOCK

    def __init__(self, client, ref, progress):
        self.client, self.ref, self.progress = client, ref, progress

    def run(self, path, layout, store, fill, k, params, todo):
        ref = self.ref
        futures = [self.client.submit(_block_task, ref.key, ref.path, ref.scattered, str(path),
                                      layout, b, store, fill, k, params, pure=False)
                   for b in todo]
        list(as_completed_with_progress(self.client, futures, len(layout.blocks),
                                        Path(path).name, self.progress, "block"))


def _block_task(key, model_path, scattered, path, layout, b, store, fill, k, params):
    import rasterio

    from rsunet.io import open_raster
    from rsunet.prediction import gdal_options, predict_block

    model = worker_model(key, model_path, scattered, params)
    readable(path)
    with rasterio.Env(**gdal_options()), open_raster(path) as src:
        predict_block(src, scene_model(key, model, src, path), layout, b, store, fill, k,
                       params)
    return b
