"""Radio setup files (radio_config/*.yaml): one schema, clear errors.

Every key is declared once in SCHEMA with its type, default and allowed
values. load_config() merges the file over the defaults and stops on the first
unknown key or bad value with a message naming file, key, value and what is
allowed.
"""
import copy
from pathlib import Path

import yaml


class ConfigError(ValueError):
    pass


class RadioError(RuntimeError):
    """The radio the setup names could not be opened or set up (a USRP not attached)."""


def _num(lo=None, hi=None, integer=False):
    return {"type": "int" if integer else "number", "min": lo, "max": hi}


SCHEMA = {
    "name": {"type": "str", "default": "unnamed", "doc": "what this setup is"},
    "link": {"type": "choice", "choices": ["zmq", "usrp"], "default": "zmq",
             "doc": "zmq: two processes over a ZMQ loopback with an emulated channel; usrp: over the air"},
    "ofdm": {
        "fft_len": {**_num(16, 4096, True), "default": 64, "doc": "FFT length"},
        "cp_len": {**_num(1, 1024, True), "default": 16, "doc": "cyclic prefix, samples"},
        "amplitude": {**_num(1e-4, 1.0), "default": 0.1, "doc": "RMS amplitude of the TX samples at full power"},
        "max_fragment_symbols": {**_num(48, 16383, True), "default": 4800,
                                 "doc": "complex payload symbols per frame; larger images are fragmented"},
        "detect_threshold": {**_num(0.5, 0.99999999), "default": 0.9999,
                             "doc": "corr_est_cc dynamic threshold for frame detection"},
        "guard_symbols": {**_num(1, 64, True), "default": 1, "doc": "OFDM symbols closing each frame"},
        "cfo_search": {**_num(0.0, 1.0), "default": 1.0,
                       "doc": "largest carrier frequency offset (carrier spacings) at which the receiver finds "
                              "frames: one preamble correlator per 0.2 spacing (0.1: one correlator)"},
    },
    "codec": {
        "name": {"type": "str", "default": "deepjscc",
                 "doc": "model folder under models/, or a digital codec: separation[-webp|-avif|-jpeg2000], "
                        "spic[-LEVEL], cspic[-LEVEL], sqgan[-LEVEL], sqgan-random[-LEVEL]"},
        "rate_index": {**_num(0, 15, True), "default": 0,
                       "doc": "rate level of the codec: swinjscc and deepjscc_sr send 8 - rate_index of their 8 symbol groups "
                              "(0: CBR 1/6, 4: 1/12, 6: 1/24); separation, spic, cspic, sqgan: the MCS; deepjscc: 0 only"},
        "power_level": {**_num(0, 15, True), "default": 0, "doc": "transmit power level, 2 dB per step down"},
        "refine_steps": {**_num(0, 15, True), "default": 0,
                         "doc": "diffusion steps the header asks of the receiver: the refiner's (0: JSCC output "
                                "only), or spic's and cspic's regeneration (0: the upsampled coarse image)"},
        "encoder_snr_db": {**_num(-10, 40), "default": 10.0,
                           "doc": "SNR the encoder is conditioned on (channel state known at TX)"},
        "models_dir": {"type": "str", "default": "", "doc": "folder holding the model folders ('' = search path)"},
        "digital_cbr": {**_num(0.001, 1.0), "default": 1 / 6,
                        "doc": "channel uses per pixel value of the digital codecs (separation, spic, cspic, sqgan): "
                               "set it to an analog codec's CBR to compare them at equal channel uses; the "
                               "transmitter and the receiver must agree"},
        "classes": {"type": "names", "default": ["SignSymbol", "Pole", "Pedestrian", "Bicyclist"],
                    "doc": "cspic: the CamVid classes whose regions it refines"},
        "class_quality": {**_num(-1, 100, True), "default": 40,
                          "doc": "cspic: WebP quality of the class details (the frame at half resolution in the "
                                 "class regions); -1: none"},
        "class_masks": {"type": "bool", "default": False,
                        "doc": "cspic: also send the classes' full-resolution masks when the map goes at a lower one"},
    },
    "channel": {
        "enabled": {"type": "bool", "default": True, "doc": "emulate the channel (ZMQ); off for USRP"},
        "snr_db": {**_num(-20, 80), "default": 10.0, "doc": "per-carrier SNR at full power"},
        "cfo": {**_num(-0.95, 0.95), "default": 0.0,
                "doc": "carrier frequency offset, in carrier spacings (within ofdm.cfo_search)"},
        "multipath_taps": {"type": "taps", "default": [1.0],
                           "doc": "sample-spaced FIR taps, real or [re, im]; normalized to unit energy"},
        "fading": {"type": "choice", "choices": ["none", "rayleigh", "rician", "rayleigh_block"], "default": "none",
                   "doc": "flat fading before the multipath taps: rayleigh/rician are gr-channels fading_model "
                          "(time-varying at doppler); rayleigh_block holds one Rayleigh gain per image slot"},
        "doppler": {**_num(0.0, 0.1), "default": 1e-5, "doc": "max Doppler, normalized to the sample rate"},
        "k_factor": {**_num(0.0, 100.0), "default": 4.0, "doc": "Rician K factor"},
        "seed": {**_num(0, 2 ** 31 - 1, True), "default": 42, "doc": "noise and fading seed"},
        "snr_trace": {"type": "str", "default": "",
                      "doc": "CSV with one column snr_db: the SNR per image slot at full power ('' = snr_db)"},
    },
    "controller": {
        "enabled": {"type": "bool", "default": False, "doc": "closed loop: RX reports, TX controller, paced source"},
        "policy": {"type": "choice", "choices": ["lyapunov", "fixed", "greedy"], "default": "lyapunov",
                   "doc": "allocation policy"},
        "V": {**_num(0, 1e12), "default": 2e4, "doc": "drift-plus-penalty energy weight"},
        "delay_target_ms": {**_num(0, 1e6), "default": 10.0,
                            "doc": "average delay constraint, over the images delivered (a lost image has no delay)"},
        "loss_target": {**_num(0, 1), "default": 0.05,
                        "doc": "average loss-rate constraint: the fraction of images lost (1 = none)"},
        "quality_metric": {"type": "choice", "choices": ["psnr_db", "ms_ssim_db", "accuracy_pct", "miou_pct"],
                           "default": "psnr_db",
                           "doc": "what the quality constraint measures: PSNR (dB), MS-SSIM in dB "
                                  "(-10 log10(1 - MS-SSIM)), accuracy_pct (% of images the CIFAR-10 "
                                  "classifier labels right; the refiner's steps pay off in the last two) or "
                                  "miou_pct (CamVid segmenter mIoU, %; the receiver has no label maps to report it, "
                                  "so the closed loop charges each image the calibration's expectation)"},
        "quality_target": {**_num(0, 100), "default": 24.0,
                           "doc": "average quality constraint, in quality_metric's unit"},
        "power_levels": {"type": "intlist", "default": [0, 1, 2, 3, 4, 5, 6, 7],
                         "doc": "allowed power levels (2 dB steps below full power)"},
        "refine_steps": {"type": "intlist", "default": list(range(16)),
                         "doc": "refiner step counts the controller may choose, of those in the calibration table"},
        "fixed_power_level": {**_num(0, 15, True), "default": 0, "doc": "power level of the fixed policy"},
        "fixed_rate_index": {**_num(-1, 15, True), "default": -1,
                             "doc": "rate index of the fixed policy (-1 = the codec's full rate)"},
        "fixed_refine_steps": {**_num(0, 15, True), "default": 0,
                               "doc": "refiner steps of the fixed policy and of the first image"},
        "calibration": {"type": "str", "default": "",
                        "doc": "calibration table Q(snr, rate, steps) from `gsc bench calibrate` "
                               "('' = models/<codec.name>/calibration.json)"},
        "report_address": {"type": "str", "default": "tcp://127.0.0.1:5556",
                           "doc": "ZMQ PUB (RX, binds) / SUB (TX, connects) address of the reports"},
        "slot_timeout_s": {**_num(0.05, 60), "default": 0.25,
                           "doc": "a slot with no report after this long counts as lost, with this delay"},
        "loss_snr_db": {**_num(-20, 40), "default": -3.5,
                        "doc": "effective SNR at which the controller expects half of the images lost "
                               "(logistic; `gsc bench frames` measures it)"},
        "loss_width_db": {**_num(0.05, 10), "default": 0.5,
                          "doc": "dB per e-fold of that logistic (`gsc bench frames` measures it)"},
        "lost_quality": {**_num(-1, 100), "default": -1.0,
                         "doc": "quality charged for a lost image, in quality_metric's unit (-1 = the "
                                "calibration table's: the dataset mean image's)"},
    },
    "zmq": {
        "address": {"type": "str", "default": "tcp://127.0.0.1:5555",
                    "doc": "PUSH (TX, binds) / PULL (RX, connects) address; loopback by default"},
    },
    "usrp": {
        "args": {"type": "str", "default": "", "doc": "UHD device args, e.g. type=b200"},
        "samp_rate": {**_num(1e5, 1e8), "default": 1e6, "doc": "sample rate, S/s"},
        "center_freq": {**_num(1e6, 6e9), "default": 2.45e9, "doc": "carrier frequency, Hz"},
        "tx_gain": {**_num(0, 100), "default": 60.0, "doc": "TX gain, dB"},
        "rx_gain": {**_num(0, 100), "default": 40.0, "doc": "RX gain, dB"},
        "tx_antenna": {"type": "str", "default": "TX/RX", "doc": "TX antenna port"},
        "rx_antenna": {"type": "str", "default": "RX2", "doc": "RX antenna port"},
    },
    "rx": {
        "reassembly_timeout_s": {**_num(0.05, 600), "default": 2.0,
                                 "doc": "decode an incomplete image this long after its last fragment"},
        "refine_steps": {**_num(-1, 15, True), "default": -1,
                         "doc": "diffusion refiner steps at the receiver: -1 = as each header says, 0..15 = fixed"},
    },
    "decode_service": {
        "backend": {"type": "choice", "choices": ["embedded", "ray"], "default": "embedded",
                    "doc": "embedded: a thread of the receiver; ray: a Ray Serve deployment on 127.0.0.1"},
        "mode": {"type": "choice", "choices": ["batched", "sync"], "default": "batched",
                 "doc": "batched: images of all users batched; sync: one image at a time, in arrival order"},
        "batch_size": {**_num(1, 256, True), "default": 8, "doc": "most images in one decode batch"},
        "workers": {**_num(1, 64, True), "default": 2,
                    "doc": "batches decoded at once (threads of the embedded service, concurrent batches on Ray); "
                           "sync has one"},
        "max_wait_ms": {**_num(0, 1000), "default": 0.0,
                        "doc": "how long a batch waits for more images after its first (0: takes what is queued)"},
        "record": {"type": "str", "default": "",
                   "doc": "write every fragment the receivers hand over (header fields, symbols, arrival time) "
                          "to this .npz at the end, for `bench multiuser` to replay ('' = none)"},
    },
    "multiuser": {
        "users": {**_num(1, 8, True), "default": 1,
                  "doc": "transmitters, each on its own sub-band of one receive stream (1: the single link)"},
        "snr_db": {"type": "numlist", "default": [],
                   "doc": "per-user SNR of the emulated air, dB at full power (empty: channel.snr_db for all)"},
        "user_rate": {**_num(1e4, 1e8), "default": 2.5e5,
                      "doc": "each user's sample rate (S/s); the loopback air runs at users x this"},
    },
}


def _is_leaf(spec) -> bool:
    return "type" in spec and not isinstance(spec.get("type"), dict)


def defaults(schema=SCHEMA) -> dict:
    return {k: (copy.deepcopy(v["default"]) if _is_leaf(v) else defaults(v)) for k, v in schema.items()}


def _check_value(where: str, key: str, value, spec):
    kind = spec["type"]

    def fail(expected):
        raise ConfigError(f"{where}: key {key}: value {value!r} is not allowed: expected {expected}")

    if kind == "str":
        if not isinstance(value, str):
            fail("a string")
        return value
    if kind == "bool":
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if kind == "choice":
        if value not in spec["choices"]:
            fail("one of " + ", ".join(map(str, spec["choices"])))
        return value
    if kind in ("number", "int"):
        lo, hi = spec.get("min"), spec.get("max")
        if isinstance(value, str):
            # PyYAML (YAML 1.1) reads 1.0e6 as a string; accept numbers written that way.
            try:
                value = float(value)
            except ValueError:
                pass
        bounds = f" between {lo} and {hi}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (kind == "int" and not float(value).is_integer()):
            fail(("an integer" if kind == "int" else "a number") + bounds)
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            fail(("an integer" if kind == "int" else "a number") + bounds)
        return int(value) if kind == "int" else float(value)
    if kind == "intlist":
        if not isinstance(value, list) or not value or not all(isinstance(v, int) and 0 <= v < 16 for v in value):
            fail("a non-empty list of integers 0..15")
        return sorted(set(value))
    if kind == "numlist":
        if not isinstance(value, list) or len(value) > 64 or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            fail("a list of numbers")
        return [float(v) for v in value]
    if kind == "names":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
            fail("a non-empty list of names")
        return list(value)
    if kind == "taps":
        if not isinstance(value, list) or not value or len(value) > 64:
            fail("a list of 1 to 64 taps, each a number or [re, im]")
        taps = []
        for tap in value:
            if isinstance(tap, (int, float)) and not isinstance(tap, bool):
                taps.append(complex(tap))
            elif isinstance(tap, list) and len(tap) == 2 and all(isinstance(t, (int, float)) for t in tap):
                taps.append(complex(tap[0], tap[1]))
            else:
                fail("a list of taps, each a number or [re, im]")
        if sum(abs(t) ** 2 for t in taps) == 0:
            fail("taps with non-zero energy")
        return taps
    raise AssertionError(kind)


def validate(data: dict, where: str, schema=SCHEMA, prefix="") -> dict:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix.rstrip('.') or 'the file'} must be a mapping of keys to values")
    out = defaults(schema)
    for key, value in data.items():
        full = prefix + str(key)
        if key not in schema:
            raise ConfigError(f"{where}: unknown key {full}: allowed keys here are "
                              + ", ".join(sorted(schema)))
        spec = schema[key]
        if _is_leaf(spec):
            out[key] = _check_value(where, full, value, spec)
        else:
            out[key] = validate(value, where, spec, full + ".")
    return out


def parse_overrides(pairs) -> dict:
    """['channel.snr_db=5', ...] -> {'channel.snr_db': 5.0}; values parsed as YAML scalars."""
    out = {}
    for pair in pairs or []:
        key, sep, value = str(pair).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. channel.snr_db=5")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            reason = str(err).splitlines()[0]
            raise ConfigError(f"--set {pair!r}: the value is not valid YAML ({reason}); quote it or fix "
                              "it, e.g. channel.snr_db=5 or channel.multipath_taps=[1.0,0.3]") from None
    return out


def load_config(path: str | Path, overrides: dict | list | None = None) -> dict:
    """Read, merge over defaults and validate a radio setup file; overrides use dotted keys
    (a dict, or a list of 'KEY=VALUE' strings as --set gives them)."""
    if isinstance(overrides, (list, tuple)):
        overrides = parse_overrides(overrides)
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found (setups live in radio_config/)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the file must be a mapping of keys to values")
    for dotted, value in (overrides or {}).items():
        node, schema = data, SCHEMA
        *parents, leaf = dotted.split(".")
        for depth, part in enumerate(parents):
            where = ".".join(parents[:depth + 1])
            spec = schema.get(part) if isinstance(schema, dict) else None
            if spec is None or _is_leaf(spec):
                sections = sorted(k for k, v in SCHEMA.items() if not _is_leaf(v))
                what = "not a section of the setup" if spec is None else "a value, not a section"
                raise ConfigError(f"--set {dotted}={value!r}: {where} is {what}; the sections are "
                                  + ", ".join(sections))
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{path}: key {where} must be a section (a mapping of keys to values)")
            schema = spec
        node[leaf] = value
    config = validate(data, str(path))
    check_consistency(config, str(path))
    config["_path"] = str(path)
    return config


# The CFO one preamble correlator covers either side of its own offset: half the
# receiver's correlator spacing (ofdm_analog_rx.CFO_SEARCH_STEP; this module stays
# free of GNU Radio imports).
CORRELATOR_REACH = 0.1


def check_consistency(config: dict, where: str):
    """Checks across sections, after each value has passed its own."""
    channel, ofdm = config["channel"], config["ofdm"]
    users = config["multiuser"]
    if users["snr_db"] and len(users["snr_db"]) != users["users"]:
        raise ConfigError(f"{where}: key multiuser.snr_db: {len(users['snr_db'])} values for "
                          f"{users['users']} users: give one per user, or none for channel.snr_db")
    reach = max(ofdm["cfo_search"], CORRELATOR_REACH)
    if config["link"] == "zmq" and channel["enabled"] and abs(channel["cfo"]) > reach:
        raise ConfigError(f"{where}: key channel.cfo: value {channel['cfo']} is outside ofdm.cfo_search "
                          f"{ofdm['cfo_search']}: the receiver would find no frame; set ofdm.cfo_search to at "
                          f"least {abs(channel['cfo'])}")
