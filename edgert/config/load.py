"""Load a device's TOML once and turn it into frozen values, or one sentence saying what to fix."""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from edgert.config.reader import Section
from edgert.config.types import (Config, EscalateConfig, FailSafeConfig, InputConfig,
                                 LadderConfig, Line, ModelConfig, MotionConfig, MqttConfig,
                                 OutputConfig, Rule, RuntimeConfig, Rung, SecondaryConfig,
                                 SerialConfig, ServiceConfig, SourceConfig, TrackerConfig,
                                 UserStageConfig, Zone)
from edgert.config.types import DIRECTIONS, IMAGE_SUFFIXES
from edgert.geometry import line_axis, polygon_area, self_intersects
from edgert.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - JetPack 6 ships Python 3.10
    import tomli as tomllib

FAMILIES = ("yolov8", "yolov5", "yolox", "ssd", "classify")
PROVIDERS = ("tensorrt", "cuda", "rocm", "migraphx", "openvino", "qnn", "coreml", "xnnpack",
             "acl", "armnn", "dml", "cpu")
OUTPUT_TYPES = ("stdout", "jsonl", "serial", "mqtt")
_NETWORK = ("rtsp://", "rtsps://", "http://", "https://", "udp://", "rtmp://", "tcp://")
# One process, one loop: every source's frames take turns on the same loop and model, so each
# camera's share of them shrinks as cameras are added; past this, run a process per group.
MAX_SOURCES = 16


def load_config(path: str | Path) -> Config:
    """Read and validate CONFIG; raises ConfigError naming the file and dotted key."""
    file = Path(path)
    try:
        if file.is_dir():
            raise ConfigError(str(file), "", "is a directory, not a config file",
                              "give the path of the .toml file")
        file.stat()
    except FileNotFoundError:
        raise ConfigError(str(file), "", "no such config file", "check the path") from None
    except OSError as e:   # a folder on the way the service user may not enter
        raise ConfigError(str(file), "", f"cannot be reached ({e.strerror})",
                          "let the service user read it and enter its folders") from None
    data = _read_toml(file)
    file = file.resolve()
    top = Section(file, "", data)
    device_id = _topic_level(top, "device_id",
                             top.str("device_id", fix='add device_id = "line3-cam1" at the top'))
    sources, named = _sources(top)
    model = _model(top.table_("model"))
    runtime = _runtime(top.table_("runtime"), model)
    zones = tuple(_zone(s) for s in top.tables("zones"))
    lines = tuple(_line(s) for s in top.tables("lines"))
    rules = tuple(_rule(s) for s in top.tables("rules"))
    tracker = _tracker(top.table_("tracker"))
    motion = _motion(top.table_("motion"), rules)
    fail_safe = _fail_safe(top.table_("fail_safe"))
    outputs = tuple(_output(s, device_id) for s in top.tables("outputs"))
    service = _service(top.table_("service"))
    top.done()
    _cross_check(top, zones, lines, rules, model, outputs)
    _check_source_ids(top, sources if named else (), zones, lines, rules, outputs, motion)
    _check_serial(fail_safe, sources, rules, outputs, str(file))
    return Config(file=file, device_id=device_id, source=sources[0], model=model,
                  runtime=runtime, fail_safe=fail_safe, zones=zones, lines=lines, rules=rules,
                  tracker=tracker, motion=motion, outputs=outputs, service=service,
                  sources=sources, named_sources=named)


def _topic_level(s: Section, name: str, value: str) -> str:
    """An id that becomes one level of an MQTT topic: no '/', '+', '#' or spaces."""
    if not re.fullmatch(r"[A-Za-z0-9._-]+", value):
        raise s.error(name, f"is {value!r}",
                      "use only letters, digits, '.', '_' and '-' (it becomes an MQTT topic)")
    return value


def _sources(top: Section) -> tuple[tuple[SourceConfig, ...], bool]:
    """[source], or [[sources]] with an id each: every source, and whether they are named."""
    if top.has("source") and top.has("sources"):
        raise top.error("sources", "is given together with [source]",
                        "keep one: [source] for one camera, or [[sources]] with an id each")
    if not top.has("sources"):
        if not top.has("source"):
            raise top.error("source.url", "is missing", 'add [source] with url = "file:clip.mp4" '
                            "(or camera:0, rtsp://…, pattern:), or [[sources]] with an id and "
                            "url each for several cameras")
        return (_source(top.table_("source")),), False
    tables = top.tables("sources")
    if not tables:
        raise top.error("sources", "is empty", "add a [[sources]] table with id and url")
    if len(tables) > MAX_SOURCES:
        raise top.error("sources", f"has {len(tables)} sources, more than one process and its "
                        f"one loop take ({MAX_SOURCES})", "split the cameras over several "
                        "configs, each run by its own edgert process with its own device_id")
    sources: list[SourceConfig] = []
    for t in tables:
        src = _source(t, named=True)
        if any(other.id == src.id for other in sources):
            raise t.error("id", f"repeats {src.id!r}", "give each source its own id")
        sources.append(src)
    return tuple(sources), True


def _service(s: Section) -> ServiceConfig:
    listen = s.str("metrics_listen", None)
    address = None
    if listen is not None:
        m = re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+):(\d+)", listen)
        if m is None or not 1 <= int(m.group(2)) <= 65535:
            raise s.error("metrics_listen", f"is {listen!r}",
                          'write HOST:PORT, e.g. "127.0.0.1:9108" (loopback unless a scraper '
                          "elsewhere needs it)")
        try:
            import prometheus_client  # noqa: F401  (only for configs that serve metrics)
        except ImportError:
            raise s.error("metrics_listen", "is set, but the prometheus-client package is not "
                          "installed", "pip install 'edgert[service]', or remove it") from None
        address = (m.group(1).strip("[]"), int(m.group(2)))
    cfg = ServiceConfig(metrics_listen=address,
                        stall_s=s.number("stall_s", 5.0, lo=0.1, hi=3600.0))
    s.done()
    return cfg


def parse_source_url(s: Section, url: str) -> tuple[str, str]:
    """Split a source URL into (kind, target), resolving paths against the config file."""
    base = s.file.parent
    if url.startswith("file:"):
        path = (base / Path(url[5:]).expanduser()).resolve()
        if not path.is_file():
            raise s.error("url", f"names {url!r}, but there is no file {path}",
                          "fix the path (relative paths start at the config file)")
        # A still image decodes through cv2.imread, as images: does: FFmpeg's JPEG decoder
        # differs from it by up to 41 grey levels.
        return ("images" if path.suffix.lower() in IMAGE_SUFFIXES else "file"), str(path)
    if url.startswith("images:"):
        path = (base / Path(url[7:]).expanduser()).resolve()
        if not (path.is_dir() or path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES):
            kinds = ", ".join(sorted(e[1:] for e in IMAGE_SUFFIXES))
            raise s.error("url", f"names {url!r}, but {path} is neither a folder nor an image "
                          f"file ({kinds})", "point images: at a folder of images or one image")
        return "images", str(path)
    if url.startswith("camera:"):
        index = url[7:]
        if not index.isdigit():
            raise s.error("url", f"is {url!r}", "write camera:N with a device index, e.g. camera:0")
        return "camera", index
    if re.fullmatch(r"/dev/video\d+", url):
        return "v4l", url
    if url.startswith(_NETWORK):
        return "network", url
    if url.startswith("gst:"):
        return "gstreamer", url[4:].strip()
    if url == "pattern:" or url.startswith("pattern:"):
        return "pattern", url[8:]
    raise s.error("url", f"is {url!r}", "use file:PATH, camera:N, /dev/videoN, rtsp://…, "
                  "http(s)://…, udp://…, images:DIR_OR_IMAGE, gst:PIPELINE or pattern:")


def _source(s: Section, named: bool = False) -> SourceConfig:
    """[source], or one [[sources]] table (`named`), which also takes `id` and `fail_safe`."""
    own = {}
    if named:
        own = dict(id=_topic_level(s, "id", s.str("id", fix='add id = "cam1" (it names the '
                                                  "source in records and MQTT topics)")),
                   fail_safe=s.str("fail_safe", None, fix="give its fail-safe action, or "
                                   "remove it for [fail_safe] action"))
    url = s.str("url", fix='add url = "file:clip.mp4" (or camera:0, rtsp://…, pattern:)')
    kind, target = parse_source_url(s, url)
    # One image is one frame: in `latest` mode start-up would take it to warm up on and the
    # run would end having decided nothing.
    still = kind == "images" and Path(target).is_file()
    mode = s.str("mode", "every" if still else "latest", choices=("latest", "every"))
    fps = s.number("fps", None, lo=0.0, hi=1000.0, lo_open=True)
    cfg = SourceConfig(
        url=url, kind=kind, target=target, mode=mode, fps=fps,
        loop=s.bool("loop", False),
        stall_timeout_s=s.number("stall_timeout_s", 5.0, lo=0.05, hi=3600.0),
        reopen_initial_s=s.number("reopen_initial_s", 0.5, lo=0.01, hi=600.0),
        reopen_max_s=s.number("reopen_max_s", 30.0, lo=0.01, hi=3600.0),
        size=s.numbers("size", 2, (480, 640), lo=16, hi=8192, integer=True), **own)
    if cfg.loop and kind not in ("file", "images"):
        raise s.error("loop", f"is true for a {kind} source", "loop applies only to file: and images:")
    if still and mode == "latest" and not cfg.loop:
        raise s.error("mode", "is 'latest' for a single image, which start-up would take to warm "
                      "up on, leaving nothing to decide", 'remove mode (a single image is read '
                      'in "every" mode) or set loop = true')
    if cfg.reopen_max_s < cfg.reopen_initial_s:
        raise s.error("reopen_max_s", f"({cfg.reopen_max_s:g}) is below reopen_initial_s "
                      f"({cfg.reopen_initial_s:g})", "raise it or lower reopen_initial_s")
    s.done()
    return cfg


def _input(s: Section, card_keys: frozenset[str] = frozenset()) -> InputConfig:
    """[model.input]; `card_keys` are those only model.toml set (the rest the device config)."""
    cfg = InputConfig(
        resize=s.str("resize", "letterbox", choices=("letterbox", "stretch", "center_crop")),
        size=s.numbers("size", 2, None, lo=8, hi=8192, integer=True),
        color=s.str("color", "bgr", choices=("bgr", "rgb")),
        scale=s.number("scale", 1.0, lo=0.0, lo_open=True),
        mean=s.numbers("mean", 3, (0.0, 0.0, 0.0)),
        std=s.numbers("std", 3, (1.0, 1.0, 1.0)),
        pad_value=s.number("pad_value", 114, lo=0, hi=255, integer=True),
        crop_fraction=s.number("crop_fraction", 0.875, lo=0.0, hi=1.0, lo_open=True),
        align=s.str("align", "center", choices=("center", "top_left")),
        layout=s.str("layout", None, choices=("nchw", "nhwc")),
        given=tuple(sorted((k, "model.toml" if k in card_keys else "config") for k in s.table)))
    if any(v <= 0 for v in cfg.std):
        raise s.error("std", f"is {list(cfg.std)!r}", "every value must be above 0")
    s.done()
    return cfg


MODEL_CARD = "model.toml"


def _read_toml(file: Path) -> dict:
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise ConfigError(str(file), "", f"cannot be read ({e.strerror})",
                          "let the service user read it (chmod or chgrp it)") from None
    except UnicodeDecodeError:
        raise ConfigError(str(file), "", "is not UTF-8 text", "save it as UTF-8 TOML") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(str(file), "", f"is not valid TOML ({e})", "fix the syntax") from None


def model_card(given: Path, resolved: Path) -> Path | None:
    """The model.toml beside the .onnx as the user named it, else beside the file a symlink
    names: a folder of links to shared models keeps its own cards."""
    for folder in dict.fromkeys((given.parent, resolved.parent)):
        if (folder / MODEL_CARD).is_file():
            return folder / MODEL_CARD
    return None


def _model(s: Section) -> ModelConfig:
    """[model], over the defaults an optional model.toml beside the .onnx gives.

    model.toml carries what the model file cannot say about itself (family, colour order,
    scaling, labels, thresholds), so one model serves many device configs unchanged.
    """
    path = s.path("path", fix="point it at an existing .onnx file")
    card = model_card(s.file.parent / Path(s.table["path"]).expanduser(), path)
    if card is None:
        return _model_values(s, path)
    top = Section(card, "", _read_toml(card))
    base = top.table_("model")
    top.done()
    _model_values(Section(card, "model", dict(base.table)), path)   # its own errors name it
    merged = dict(base.table)
    card_keys = frozenset(_keys(merged.get("input")) - _keys(s.table.get("input")))
    if isinstance(merged.get("labels"), str):
        merged["labels"] = str((card.parent / merged["labels"]).resolve())
    for key, value in s.table.items():
        if key == "input" and isinstance(value, dict) and isinstance(merged.get("input"), dict):
            merged["input"] = {**merged["input"], **value}
        elif key != "path":
            merged[key] = value
    s.raw("path")
    s._seen.update(s.table)   # read below, through the merged view
    return _model_values(Section(s.file, s.prefix, merged), path, card_keys)


def _keys(table: object) -> set[str]:
    return set(table) if isinstance(table, dict) else set()


def _model_values(s: Section, path: Path, card_keys: frozenset[str] = frozenset()) -> ModelConfig:
    family = s.str("family", "yolov8")
    if family not in FAMILIES:
        _check_user_decoder(s, family)
    labels = None
    labels_file = s.path("labels", None, fix="point it at a text file with one label per line")
    if labels_file is not None:
        try:
            text = labels_file.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise s.error("labels", f"names {labels_file}, which is not UTF-8 text",
                          "save it as UTF-8, one label per line") from None
        labels = tuple(ln.strip() for ln in text.splitlines() if ln.strip())
        if not labels:
            raise s.error("labels", f"names {labels_file}, which has no labels",
                          "write one label per line")
    cfg = ModelConfig(
        path=path, family=family, labels=labels,
        conf=s.number("conf", 0.25, lo=0.0, hi=1.0),
        iou=s.number("iou", 0.45, lo=0.0, hi=1.0, lo_open=True),
        max_det=s.number("max_det", 100, lo=1, hi=10000, integer=True),
        top_k=s.number("top_k", 5, lo=1, hi=1000, integer=True),
        input=_input(s.table_("input"), card_keys),
        secondary=tuple(_secondary(t) for t in s.tables("secondary")),
        stage=_user_stage(s.table_("stage")) if s.has("stage") else None,
        escalate=_escalate(s.table_("escalate")) if s.has("escalate") else None)
    names = [sec.name for sec in cfg.secondary]
    if len(names) != len(set(names)):
        raise s.error("secondary", f"repeats a name ({', '.join(names)})",
                      "give each secondary model its own name")
    s.done()
    return cfg


ESCALATE_KEYS = ("band", "on", "hinge")


def _escalate(s: Section) -> EscalateConfig:
    """[model.escalate]: `band` and `on`, and the rest read as a [model] (model.toml too)."""
    for nested in ("secondary", "stage", "escalate"):
        if nested in s.table:
            raise s.error(nested, "is set on the escalation model",
                          "set it on [model]: the escalation model only replaces its detections")
    own = Section(s.file, s.prefix, {k: v for k, v in s.table.items() if k in ESCALATE_KEYS})
    band = own.numbers("band", 2, (0.3, 0.6), lo=0.0, hi=1.0)
    if band[0] >= band[1]:
        raise own.error("band", f"is {list(band)}", "write [low, high] with low < high: a "
                        "detection scoring in between is unsure")
    cfg = EscalateConfig(model=_model(Section(s.file, s.prefix, {
        k: v for k, v in s.table.items() if k not in ESCALATE_KEYS})), band=band,
        on=own.strings("on", ()), hinge=own.number("hinge", 0.0, lo=0.0, hi=1.0))
    own.done()
    return cfg


def _user_stage(s: Section) -> UserStageConfig:
    function = s.str("function", fix='add function = "package.module:function"')
    if ":" not in function:
        raise s.error("function", f"is {function!r}", 'write it as "package.module:function"')
    _check_loadable(s, "function", function)
    sessions = s.table_("sessions")
    paths = {name: sessions.path(name, fix="point it at an existing .onnx file")
             for name in list(sessions.table)}
    sessions.done()
    options = s.table_("options").table
    s.done()
    return UserStageConfig(function, paths, options)


SECONDARY_KEYS = ("name", "on", "min_score", "max_crops", "padding")


def _secondary(s: Section) -> SecondaryConfig:
    """[[model.secondary]]: its own keys, and the rest read as a [model] (model.toml too)."""
    if "secondary" in s.table:
        raise s.error("secondary", "is nested in a secondary model",
                      "list every secondary model under [model] as [[model.secondary]]")
    own = Section(s.file, s.prefix, {k: v for k, v in s.table.items() if k in SECONDARY_KEYS})
    cfg = SecondaryConfig(
        name=own.str("name", fix='add name = "attribute" (the key in each detection\'s attributes)'),
        model=_model(Section(s.file, s.prefix, {k: v for k, v in s.table.items()
                                                 if k not in SECONDARY_KEYS})),
        on=own.strings("on", ()),
        min_score=own.number("min_score", 0.0, lo=0.0, hi=1.0),
        max_crops=own.number("max_crops", 4, lo=1, hi=256, integer=True),
        padding=own.number("padding", 0.1, lo=0.0, hi=2.0))
    own.done()
    if cfg.model.family not in ("classify",) and cfg.model.family in FAMILIES:
        raise s.error("family", f"is {cfg.model.family!r}; a secondary model gives each crop an "
                      "attribute", 'use "classify" or a decoder of your own '
                      '("package.module:function"); a cascade that refines boxes is a user stage '
                      "(docs/models.md)")
    return cfg


def _check_user_decoder(s: Section, family: str) -> None:
    if ":" not in family:
        raise s.error("family", f"is {family!r}", "use one of " + ", ".join(map(repr, FAMILIES))
                      + ' or a decoder of your own as "package.module:function"')
    _check_loadable(s, "family", family)


def _check_loadable(s: Section, key: str, spec: str) -> None:
    from edgert.postprocess.user import load_callable   # imports user code: only when asked
    try:
        load_callable(spec)
    except Exception as e:  # ImportError, AttributeError, a SyntaxError in the user's module …
        raise s.error(key, f"is {spec!r}, which cannot be loaded "
                      f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                      "check the module is importable (PYTHONPATH) and defines the function") from None


def _ladder(s: Section, model: ModelConfig) -> LadderConfig:
    rungs = []
    for r in s.tables("rungs"):
        path = r.path("path", None) if r.has("path") else model.path
        size = r.numbers("size", 2, None, lo=1, hi=8192, integer=True)
        name = r.str("name")
        if path == model.path and size is None:
            raise r.error("size", "is missing, and the rung uses the main model",
                          "give the rung its own path, a smaller size = [height, width], or both")
        if name in [x.name for x in rungs] or name == "main":
            raise r.error("name", f"is {name!r}, which is already taken",
                          "give every rung its own name ('main' is the main model)")
        rungs.append(Rung(name=name, path=path, size=tuple(size) if size else None))
        r.done()
    ladder = LadderConfig(
        rungs=tuple(rungs),
        down_after=s.number("down_after", 3, lo=1, hi=10_000, integer=True),
        up_after=s.number("up_after", 30, lo=1, hi=1_000_000, integer=True),
        headroom=s.number("headroom", 0.8, lo=0.05, hi=1.0, lo_open=True))
    s.done()
    return ladder


def _runtime(s: Section, model: ModelConfig) -> RuntimeConfig:
    providers = s.strings("providers", ("cpu",))
    for p in providers:
        if p.lower() not in PROVIDERS:
            raise s.error("providers", f"names {p!r}", "use names from: " + ", ".join(PROVIDERS))
    providers = tuple(p.lower() for p in providers)
    options = {}
    opt_section = s.table_("provider_options")
    for name in list(opt_section.table):
        if name not in PROVIDERS:
            raise opt_section.error(name, "is not a provider", "use names from: " + ", ".join(PROVIDERS))
        if name not in providers:
            raise opt_section.error(name, f"configures {name!r}, which runtime.providers does "
                                    "not list", f"add {name!r} to runtime.providers or remove this table")
        table = opt_section.table_(name)
        opts = {}
        for key, value in table.table.items():
            if isinstance(value, (dict, list)):
                raise table.error(key, f"is {value!r}", "provider options are strings, numbers or booleans")
            # onnxruntime takes every provider option as a string; booleans as "True"/"False"
            # for some providers and "1"/"0" for others, so a user writes what the docs say.
            opts[key] = str(value) if not isinstance(value, bool) else ("1" if value else "0")
            table.raw(key)
        table.done()
        options[name] = opts
    opt_section.done()
    cfg = RuntimeConfig(
        providers=providers,
        budget_ms=s.number("budget_ms", 50.0, lo=0.0, hi=60_000.0, lo_open=True),
        on_overrun=s.str("on_overrun", "fail_safe", choices=("fail_safe", "hold_last", "skip")),
        hold_last_max_age_ms=s.number("hold_last_max_age_ms", 500.0, lo=0.0, hi=3_600_000.0),
        guard_priority=s.str("guard_priority", "realtime", choices=("realtime", "normal")),
        loop_priority=s.str("loop_priority", "realtime", choices=("realtime", "normal")),
        cost_quantile=s.number("cost_quantile", 0.5, lo=0.0, hi=1.0),
        metrics_interval_s=s.number("metrics_interval_s", 10.0, lo=0.0, hi=86_400.0),
        ladder=_ladder(s.table_("ladder"), model),
        intra_op_threads=s.number("intra_op_threads", 2, lo=0, hi=256, integer=True),
        inter_op_threads=s.number("inter_op_threads", 1, lo=0, hi=256, integer=True),
        spin_wait=s.bool("spin_wait", False),
        kernels=s.str("kernels", "numba", choices=("numba", "reference")),
        provider_policy=s.str("provider_policy", "fallback", choices=("fallback", "fail")),
        provider_options=options,
        batching=s.str("batching", "deadline", choices=("off", "deadline", "fixed")),
        max_batch=s.number("max_batch", 4, lo=1, hi=64, integer=True),
        batch_timeout_ms=s.number("batch_timeout_ms", 33.0, lo=0.0, hi=10_000.0, lo_open=True))
    s.done()
    return cfg


def _points(s: Section, name: str, min_count: int) -> tuple[tuple[float, float], ...]:
    raw = s.raw(name)
    if (not isinstance(raw, list) or len(raw) < min_count or not all(
            isinstance(p, list) and len(p) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in p)
            for p in raw)):
        raise s.error(name, f"is {raw!r}", f"give at least {min_count} [x, y] points, "
                      "non-negative pixels or fractions ≤ 1")
    return tuple((float(x), float(y)) for x, y in raw)


def _units(s: Section, default: str, points: tuple[tuple[float, float], ...], what: str) -> str:
    """Units are said, never guessed: a fraction above 1 is a mistake, not a pixel."""
    units = s.str("units", default, choices=("fraction", "pixels"))
    if units == "fraction" and any(v > 1.0 for p in points for v in p):
        raise s.error("units", f"is {units!r} but the {what} has a coordinate above 1",
                      'write units = "pixels" or give fractions of the frame from 0 to 1')
    return units


def _zone(s: Section) -> Zone:
    name = s.str("name")
    polygon = _points(s, "polygon", 3)
    if self_intersects(polygon):
        raise s.error("polygon", f"of zone {name!r} crosses itself",
                      "list the corners in order around the zone (clockwise or not)")
    if abs(polygon_area(polygon)) <= 1e-12:
        raise s.error("polygon", f"of zone {name!r} encloses no area", "give at least three "
                      "points that are not on one line, in order around the zone")
    units = _units(s, "fraction", polygon, "polygon")
    anchor = s.str("anchor", "bottom_center", choices=("bottom_center", "center", "overlap"))
    overlap = s.number("overlap", 0.5, lo=0.0, hi=1.0, lo_open=True)
    if s.has("overlap") and anchor != "overlap":
        raise s.error("overlap", f"is set but zone {name!r} has anchor = {anchor!r}",
                      'set anchor = "overlap" or remove overlap')
    zone = Zone(name=name, polygon=polygon, units=units, anchor=anchor, overlap=overlap,
                sources=_source_ids(s))
    s.done()
    return zone


def _line(s: Section) -> Line:
    name = s.str("name")
    p1, p2 = s.numbers("p1", 2, lo=0), s.numbers("p2", 2, lo=0)
    units = _units(s, "pixels", (p1, p2), "line")
    if p1 == p2:
        raise s.error("p2", f"equals p1 {list(p1)!r}: line {name!r} has zero length",
                      "give the line two different end points")
    anchor = s.str("anchor", "center", choices=("center", "bottom_center"))
    line = Line(name=name, p1=(p1[0], p1[1]), p2=(p2[0], p2[1]), units=units, anchor=anchor,
                sources=_source_ids(s))
    s.done()
    return line


def _rule(s: Section) -> Rule:
    name = s.str("name")
    debounce = s.numbers("debounce", 2, (1, 1), lo=1, integer=True)
    if debounce[0] > debounce[1]:
        raise s.error("debounce", f"is {list(debounce)!r}",
                      "write [k, n] with k ≤ n: fire when matched in k of the last n frames")
    debounce_s = s.number("debounce_s", 0.0, lo=0.0)
    if debounce_s > 0 and s.has("debounce"):
        raise s.error("debounce_s", f"and debounce are both set on rule {name!r}",
                      "keep one: debounce = [k, n] frames or debounce_s = seconds")
    area = s.numbers("area", 2, (0.0, float("inf")), lo=0)
    if area[0] > area[1]:
        raise s.error("area", f"is {list(area)!r}", "write [min, max] in square pixels, min ≤ max")
    max_count = s.number("max_count", None, lo=0, integer=True)
    min_count = s.number("min_count", 1 if max_count != 0 else 0, lo=0, integer=True)
    if max_count is not None and min_count > max_count:
        raise s.error("min_count", f"is {min_count} but max_count is {max_count}",
                      "make min_count ≤ max_count (max_count = 0 with min_count = 0: none present)")
    crosses = s.str("crosses", None)
    direction = s.str("direction", None, choices=DIRECTIONS)
    if direction is not None and crosses is None:
        raise s.error("direction", f"is set on rule {name!r}, which crosses no line",
                      'add crosses = "LINE" or remove direction')
    rule = Rule(name=name, action=s.str("action", fix='add action = "reject" (any string)'),
                labels=s.strings("labels", ()), min_score=s.number("min_score", 0.0, lo=0.0, hi=1.0),
                zone=s.str("zone", None), debounce=debounce, debounce_s=debounce_s, area=area,
                min_count=min_count, max_count=max_count, crosses=crosses,
                direction=direction or "any", dwell_s=s.number("dwell_s", 0.0, lo=0.0),
                min_on_s=s.number("min_on_s", 0.0, lo=0.0),
                min_off_s=s.number("min_off_s", 0.0, lo=0.0),
                priority=s.number("priority", 0, integer=True),
                update_s=s.number("update_s", 1.0, lo=0.0, lo_open=True),
                attribute=_attribute(s), sources=_source_ids(s))
    if rule.dwell_s > 0 and rule.zone is None:
        raise s.error("dwell_s", f"is set on rule {name!r}, which names no zone",
                      'add zone = "ZONE": dwell is time spent inside a zone')
    if crosses is not None and (rule.zone is not None or rule.dwell_s > 0 or s.has("min_count")
                                or s.has("max_count")):
        raise s.error("crosses", f"on rule {name!r} is combined with zone, dwell or counts",
                      "make the crossing a rule of its own")
    s.done()
    return rule


def _source_ids(s: Section) -> tuple[str, ...]:
    """`sources`: the ids of the sources a zone, line, rule or output applies to; checked
    against [[sources]] once every source is read (_check_source_ids)."""
    ids = s.strings("sources", ())
    if s.has("sources") and not ids:
        raise s.error("sources", "is empty", "list the ids of the sources it applies to, or "
                      "remove it (every source)")
    return ids


def _attribute(s: Section) -> tuple[str, str] | None:
    value = s.str("attribute", None)
    if value is None:
        return None
    name, sep, label = value.partition(":")
    if not sep or not name or not label:
        raise s.error("attribute", f"is {value!r}", 'write "SECONDARY:LABEL", e.g. "mask:no_mask"')
    return name, label


def _tracker(s: Section) -> TrackerConfig:
    cfg = TrackerConfig(high_score=s.number("high_score", 0.5, lo=0.0, hi=1.0),
                        match_iou=s.number("match_iou", 0.3, lo=0.0, hi=1.0, lo_open=True),
                        low_iou=s.number("low_iou", 0.5, lo=0.0, hi=1.0, lo_open=True),
                        confirm_hits=s.number("confirm_hits", 2, lo=1, integer=True),
                        lost_s=s.number("lost_s", 1.0, lo=0.0, lo_open=True))
    s.done()
    return cfg


def _motion(s: Section, rules: tuple[Rule, ...]) -> MotionConfig:
    cfg = MotionConfig(enabled=s.bool("enabled", False),
                       grid=s.numbers("grid", 2, (36, 64), lo=2, hi=1024, integer=True),
                       pixel_threshold=s.number("pixel_threshold", 12.0, lo=0.0, hi=255.0,
                                                lo_open=True),
                       area_threshold=s.number("area_threshold", 0.005, lo=0.0, hi=1.0),
                       force_every_s=s.number("force_every_s", 1.0, lo=0.0, hi=86_400.0,
                                              lo_open=True),
                       zones_only=s.bool("zones_only", False))
    if cfg.zones_only:
        # Change outside the zones is ignored only if no rule looks outside them.
        if not rules:
            raise s.error("zones_only", "is true, but there are no rules, so no zones are used",
                          'remove it, or add rules with zone = "ZONE"')
        for i, rule in enumerate(rules):
            if rule.zone is None:
                raise s.error("zones_only", f"is true, but rules[{i}] ({rule.name!r}) names no "
                              "zone and looks at the whole frame",
                              "give that rule a zone, or remove zones_only")
    s.done()
    return cfg


def _fail_safe(s: Section) -> FailSafeConfig:
    cfg = FailSafeConfig(action=s.str(
        "action", fix='add [fail_safe] action = "stop": the actuator command for a late decision'))
    s.done()
    return cfg


def _output(s: Section, device_id: str) -> OutputConfig:
    kind = s.str("type")
    if kind not in OUTPUT_TYPES:
        raise s.error("type", f"is {kind!r}", "use one of " + ", ".join(map(repr, OUTPUT_TYPES)))
    sources = _source_ids(s)
    if kind == "serial":
        cfg = OutputConfig(type=kind, serial=_serial(s), sources=sources)
    elif kind == "mqtt":
        cfg = OutputConfig(type=kind, mqtt=_mqtt(s, device_id), sources=sources)
    else:
        path = None
        if kind == "jsonl":
            path = s.path("path", must_exist=False, fix='add path = "decisions.jsonl"')
            if not path.parent.is_dir():
                raise s.error("path", f"is in {path.parent}, which does not exist",
                              "create the folder")
            if path.is_dir():
                raise s.error("path", f"names {path}, which is a folder", "name a file in it")
        cfg = OutputConfig(type=kind, path=path, sources=sources,
                           flush_every=s.number("flush_every", 1, lo=1, hi=100000, integer=True))
    s.done()
    return cfg


def _serial(s: Section) -> SerialConfig:
    port = s.str("port", fix='add port = "/dev/ttyUSB0" (or loop://, socket://host:port)')
    if "://" in port:
        _check_serial_url(s, port)
    else:   # a device path; relative paths start at the config file, like every other path.
        # Not resolved: a /dev/serial/by-id/ link must be followed again at every reopen.
        port = str((s.file.parent / Path(port).expanduser()).absolute())
    cfg = SerialConfig(
        port=port,
        baudrate=s.number("baudrate", 115200, lo=50, integer=True),
        write_timeout_ms=s.number("write_timeout_ms", 100.0, lo=1.0, hi=60_000.0),
        heartbeat_ms=s.number("heartbeat_ms", 250.0, lo=10.0, hi=600_000.0),
        ack=s.bool("ack", False),
        ack_timeout_ms=s.number("ack_timeout_ms", 50.0, lo=1.0, hi=60_000.0),
        ack_retries=s.number("ack_retries", 2, lo=0, hi=100, integer=True),
        miss_streak=s.number("miss_streak", 5, lo=0, hi=1_000_000, integer=True),
        on_missing=s.str("on_missing", "wait", choices=("wait", "fail")),
        queue=s.number("queue", 16, lo=1, hi=10_000, integer=True),
        reopen_initial_s=s.number("reopen_initial_s", 0.1, lo=0.01, hi=600.0),
        reopen_max_s=s.number("reopen_max_s", 2.0, lo=0.01, hi=3600.0))
    if cfg.baudrate > 4_000_000:   # the reader would print the bound as 4e+06
        raise s.error("baudrate", f"is {cfg.baudrate}", "it must be at most 4000000")
    if not cfg.ack:
        for key in ("ack_timeout_ms", "ack_retries"):
            if s.has(key):
                raise s.error(key, "is set, but ack is false", "set ack = true or remove it")
    if cfg.reopen_max_s < cfg.reopen_initial_s:
        raise s.error("reopen_max_s", f"({cfg.reopen_max_s:g}) is below reopen_initial_s "
                      f"({cfg.reopen_initial_s:g})", "raise it or lower reopen_initial_s")
    return cfg


def _mqtt(s: Section, device_id: str) -> MqttConfig:
    host = s.str("host", fix='add host = "127.0.0.1" (the broker\'s name or address)')
    if any(c in host for c in "/: ") and not host.startswith("["):
        raise s.error("host", f"is {host!r}", "give a host name or address only; the port goes "
                      "in port")
    prefix = s.str("prefix", f"edgert/{device_id}/")
    if "+" in prefix or "#" in prefix or "\0" in prefix:
        raise s.error("prefix", f"is {prefix!r}", "remove the wildcards + and # from it")
    if prefix.startswith("$"):   # $SYS/… is the broker's own: it accepts and silently drops
        raise s.error("prefix", f"is {prefix!r}; topics starting with $ are reserved for the "
                      "broker", "start it with a letter, e.g. edgert/")
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    client_id = s.str("client_id", f"edgert-{device_id}")
    if len(client_id.encode("utf-8")) > 65535:
        raise s.error("client_id", "is too long", "shorten it (23 characters suit every broker)")
    if "\0" in client_id:
        raise s.error("client_id", "contains a NUL character", "remove it (letters, digits and "
                      "- suit every broker)")
    tls_files = {k: s.path(k, None, fix="fix the path (relative paths start at the config file)")
                 for k in ("ca_file", "cert_file", "key_file")}
    for key, path in tls_files.items():
        if path is not None:
            _check_readable(s, key, path)
    tls = s.bool("tls", any(p is not None for p in tls_files.values()))
    if not tls:
        for key in ("ca_file", "cert_file", "key_file", "tls_verify"):
            if s.has(key):
                raise s.error(key, "is set, but tls is false", "set tls = true or remove it")
    if (tls_files["cert_file"] is None) != (tls_files["key_file"] is None):
        missing = "key_file" if tls_files["key_file"] is None else "cert_file"
        raise s.error(missing, "is missing, but a client certificate needs both cert_file and "
                      "key_file", "add it or remove the other")
    username, password = _mqtt_credentials(s)
    cfg = MqttConfig(
        host=host, client_id=client_id, prefix=prefix,
        queue_path=_queue_path(s, device_id),
        port=s.number("port", 8883 if tls else 1883, lo=1, hi=65535, integer=True),
        decision_qos=s.number("decision_qos", 1, lo=0, hi=2, integer=True),
        event_qos=s.number("event_qos", 1, lo=0, hi=2, integer=True),
        keepalive_s=s.number("keepalive", 30, lo=5, hi=65535, integer=True),
        protocol=s.str("protocol", "3.1.1", choices=("3.1.1", "5")),
        queue_max=s.number("queue_max", 100_000, lo=1, hi=100_000_000, integer=True),
        queue_sync=_queue_sync(s),
        backlog_max_age_s=s.number("backlog_max_age_s", 86400.0, lo=0.0, hi=1e9),
        max_rate=s.number("max_rate", 200.0, lo=1.0, hi=1_000_000.0),
        inflight=s.number("inflight", 64, lo=1, hi=1000, integer=True),
        reconnect_min_s=s.number("reconnect_min_s", 0.5, lo=0.05, hi=600.0),
        reconnect_max_s=s.number("reconnect_max_s", 30.0, lo=0.05, hi=3600.0),
        close_timeout_s=s.number("close_timeout_s", 2.0, lo=0.0, hi=600.0),
        tls=tls, tls_verify=s.bool("tls_verify", True), **tls_files,
        username=username, password=password)
    if cfg.reconnect_max_s < cfg.reconnect_min_s:
        raise s.error("reconnect_max_s", f"({cfg.reconnect_max_s:g}) is below reconnect_min_s "
                      f"({cfg.reconnect_min_s:g})", "raise it or lower reconnect_min_s")
    return cfg


def _queue_sync(s: Section) -> float:
    """Seconds between fsyncs of the queue; the words of earlier versions still mean what they
    promised ("full": every record survives a power cut; "normal": the default interval)."""
    value = s.raw("queue_sync", 1.0)
    if value in ("full", "normal"):
        return 0.0 if value == "full" else 1.0
    return s.number("queue_sync", 1.0, lo=0.0, hi=60.0)


def _queue_path(s: Section, device_id: str) -> Path:
    """Where the store-and-forward queue lives: queue_path, else systemd's StateDirectory
    (/var/lib/edgert under the shipped unit), else the working directory."""
    path = s.path("queue_path", None, must_exist=False)
    if path is None:
        state = os.environ.get("STATE_DIRECTORY", "").split(":")[0]
        path = Path(state or os.getcwd()).resolve() / f"mqtt-{device_id}.sqlite"
        if not path.parent.is_dir():
            raise s.error("queue_path", f"defaults to {path}, whose folder does not exist",
                          "set queue_path to a file in a writable folder")
        return path
    if not path.parent.is_dir():
        raise s.error("queue_path", f"is in {path.parent}, which does not exist", "create the folder")
    if path.is_dir():
        raise s.error("queue_path", f"names {path}, which is a folder", "name a file in it")
    return path


def _check_readable(s: Section, key: str, path: Path) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        raise s.error(key, f"names {path}, which cannot be read ({e.strerror})",
                      "let the service user read it (or fix the path)") from None


def _mqtt_credentials(s: Section) -> tuple[str | None, str | None]:
    """username, and its password from password, password_env or password_file (at most one)."""
    username = s.str("username", None)
    given = [k for k in ("password", "password_env", "password_file") if s.has(k)]
    if len(given) > 1:
        raise s.error(given[1], f"is set together with {given[0]}", "keep only one of them")
    if given and username is None:
        raise s.error(given[0], "is set, but username is missing", "add username")
    if not given:
        return username, None
    key = given[0]
    if key == "password":
        value = s.raw("password")
        if not isinstance(value, str) or not value:   # never echo what may be a secret
            raise s.error(key, f"must be a non-empty string, not {type(value).__name__}",
                          'quote it: password = "…" (or use password_file)')
        return username, value
    if key == "password_env":
        name = s.str("password_env")
        value = os.environ.get(name)
        if value is None:   # the name is not a secret; the value is never shown
            raise s.error(key, f"names the environment variable {name!r}, which is not set",
                          "set it for the service (systemd: Environment= or EnvironmentFile=)")
        return username, value
    path = s.path("password_file")
    _check_readable(s, key, path)
    if path.stat().st_mode & 0o004:
        logging.getLogger("edgert.config").warning(
            "%s: %s names %s, which every user can read: chmod 600 it", s.file, s.key(key), path)
    return username, path.read_text(encoding="utf-8").rstrip("\r\n")


def _check_serial_url(s: Section, port: str) -> None:
    """A URL pyserial cannot parse would otherwise fail only when the port is first opened."""
    import serial   # only for configs that use a serial output

    try:
        serial.serial_for_url(port, do_not_open=True)
    except ValueError as e:
        raise s.error("port", f"is {port!r}, which pyserial cannot open ({e})",
                      "use a device path such as /dev/ttyUSB0, loop:// or socket://host:port") from None
    if port.startswith("socket://"):
        m = re.fullmatch(r"socket://(\[[0-9A-Fa-f:.]+\]|[^:/?\[\]]+):(\d+)/?(\?.*)?", port)
        if m is None or not 1 <= int(m.group(2)) <= 65535:
            raise s.error("port", f"is {port!r}", "write socket://HOST:PORT with a port from 1 to 65535")


def _cross_check(top: Section, zones, lines, rules, model, outputs) -> None:
    """Settings that are fine alone but contradict each other."""
    for kind, items in (("zones", zones), ("lines", lines), ("rules", rules)):
        seen: set[str] = set()
        for i, item in enumerate(items):
            if item.name in seen:
                raise ConfigError(str(top.file), f"{kind}[{i}].name",
                                  f"repeats the name {item.name!r}", "give each one its own name")
            seen.add(item.name)
    zone_names = {z.name for z in zones}
    line_names = {ln.name for ln in lines}
    for i, rule in enumerate(rules):
        for key, ref, names, kind in (("zone", rule.zone, zone_names, "zones"),
                                      ("crosses", rule.crosses, line_names, "lines")):
            if ref is not None and ref not in names:
                known = ", ".join(sorted(names)) or "none are defined"
                raise ConfigError(str(top.file), f"rules[{i}].{key}", f"of rule {rule.name!r} "
                                  f"names {ref!r}, which is not defined",
                                  f"define it in [[{kind}]] (known: {known})")
            if key == "crosses" and ref in names and rule.direction != "any":
                line = next(ln for ln in lines if ln.name == ref)
                across = (("left_to_right", "right_to_left") if line_axis(line.p1, line.p2)
                          == "horizontal" else ("top_to_bottom", "bottom_to_top"))
                if rule.direction not in across:
                    raise ConfigError(str(top.file), f"rules[{i}].direction", f"of rule "
                                      f"{rule.name!r} is {rule.direction!r}, which never happens "
                                      f"on line {ref!r}", f"use {' or '.join(across)} or 'any'")
    secondaries = {sec.name: sec for sec in model.secondary}
    for i, rule in enumerate(rules):
        if rule.attribute is not None and rule.attribute[0] not in secondaries:
            known = ", ".join(secondaries) or "none is configured"
            raise ConfigError(str(top.file), f"rules[{i}].attribute", f"of rule {rule.name!r} "
                              f"names the secondary model {rule.attribute[0]!r}, which is not "
                              f"defined", f"define it in [[model.secondary]] (known: {known})")
    paths = [o.path for o in outputs if o.path is not None]
    if len(paths) != len(set(paths)):
        raise ConfigError(str(top.file), "outputs", "two jsonl outputs write the same file",
                          "give each its own path")
    if sum(o.type == "stdout" for o in outputs) > 1:
        raise ConfigError(str(top.file), "outputs", "has stdout twice", "keep one")


def _check_source_ids(top: Section, sources, zones, lines, rules, outputs, motion) -> None:
    """`sources` keys name sources that exist; a rule applies only where its zone or line does
    (each source's rules are built from what applies to it: Config.for_source)."""
    ids = [src.id for src in sources]   # empty: [source], whose one source has no id to name
    for kind, items in (("zones", zones), ("lines", lines), ("rules", rules),
                        ("outputs", outputs)):
        for i, item in enumerate(items):
            key = f"{kind}[{i}].sources"
            if item.sources and not ids:
                raise ConfigError(str(top.file), key, "is set, but there is no [[sources]]",
                                  "use [[sources]] with ids, or remove it")
            unknown = [x for x in item.sources if x not in ids]
            if unknown:
                raise ConfigError(str(top.file), key, f"names {', '.join(map(repr, unknown))}, "
                                  "which is not the id of a source",
                                  f"use ids from [[sources]]: {', '.join(ids)}")
    where = {("zone", z.name): z.sources or ids for z in zones}
    where.update({("line", ln.name): ln.sources or ids for ln in lines})
    for i, rule in enumerate(rules):
        for kind, ref in (("zone", rule.zone), ("line", rule.crosses)):
            if ref is None:
                continue
            theirs = where[(kind, ref)]
            missing = [x for x in rule.sources or ids if x not in theirs]
            if missing:
                said = "" if rule.sources else " (every source, as it sets no sources)"
                toml = "[" + ", ".join(f'"{x}"' for x in theirs) + "]"
                raise ConfigError(str(top.file), f"rules[{i}].sources", f"of rule {rule.name!r} "
                                  f"applies to {', '.join(missing)}{said}, but {kind} {ref!r} "
                                  f"does not (it applies to {', '.join(theirs)})",
                                  f"set sources = {toml} on the rule, or add "
                                  f"{', '.join(missing)} to the {kind}'s sources")
    if motion.zones_only:   # the motion gate of a source with no rule would count no block
        for src_id in ids:
            if not any(not r.sources or src_id in r.sources for r in rules):
                raise ConfigError(str(top.file), "motion.zones_only", f"is true, but no rule "
                                  f"applies to source {src_id!r}, so it uses no zones",
                                  f"give {src_id!r} a rule with a zone, or remove zones_only")


def _check_serial(fail_safe: FailSafeConfig, sources, rules, outputs, file: str) -> None:
    """A serial frame carries the action in at most ACTION_MAX bytes, and a port takes one writer."""
    from edgert.publish.serial_frame import ACTION_MAX

    serial = [(i, o.serial) for i, o in enumerate(outputs) if o.serial is not None]
    if not serial:
        return
    ports: dict[str, int] = {}
    for i, cfg in serial:
        if cfg.port in ports and not cfg.port.startswith("loop://"):
            raise ConfigError(file, f"outputs[{i}].port", f"is {cfg.port!r}, which "
                              f"outputs[{ports[cfg.port]}] already writes", "give each its own port")
        ports[cfg.port] = i
    actions = [(f"rules[{i}].action", r.action) for i, r in enumerate(rules)]
    actions += [("fail_safe.action", fail_safe.action)]
    actions += [(f"sources[{i}].fail_safe", src.fail_safe) for i, src in enumerate(sources)
                if src.fail_safe is not None]
    for key, action in actions:
        size = len(action.encode("utf-8"))
        if size > ACTION_MAX:
            raise ConfigError(file, key, f"is {size} bytes long, but a serial frame "
                              f"(outputs[{serial[0][0]}]) carries at most {ACTION_MAX}",
                              "shorten it")
