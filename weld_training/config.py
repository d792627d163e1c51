"""Configuration: the packaged default YAML, a user YAML over it, then `key.sub=value` overrides.

A user config may change values but not invent keys: a misspelt key fails at once with
the valid ones listed, instead of being silently ignored for a whole training run.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import yaml

DEFAULT_CONFIG = Path(__file__).resolve().parent / 'configs' / 'default.yaml'
FREE_FORM = {('data', 'fractions')}  # dict values replaced whole, checked where they are used


class ConfigError(ValueError):
    """A configuration key or value that is not valid."""


REGISTRY_ENV = 'WELD_REGISTRY'  # overrides the default registry file (tests, shared machines)


def default_config() -> dict:
    cfg = yaml.safe_load(DEFAULT_CONFIG.read_text())
    if os.environ.get(REGISTRY_ENV):
        cfg['registry'] = os.environ[REGISTRY_ENV]
    return cfg


def merge(base: dict, update: Mapping, path: tuple[str, ...] = ()) -> dict:
    """Deep-merge `update` into a copy of `base`; keys unknown to `base` raise ConfigError."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        where = '.'.join(path + (key,))
        if key not in base:
            raise ConfigError(f'unknown config key {where!r}; valid keys'
                              f'{" under " + ".".join(path) if path else ""}: {", ".join(sorted(base))}')
        if isinstance(base[key], dict) and path + (key,) not in FREE_FORM:
            if not isinstance(value, Mapping):
                raise ConfigError(f'config key {where!r} must be a mapping, got {value!r}')
            out[key] = merge(base[key], value, path + (key,))
        else:
            out[key] = copy.deepcopy(value)
    return out


def parse_override(text: str) -> dict:
    """'train.epochs=3' -> {'train': {'epochs': 3}} (the value is read as YAML)."""
    key, sep, raw = text.partition('=')
    if not sep or not key.strip():
        raise ConfigError(f'override {text!r} must look like section.key=value')
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f'override {text!r}: value is not valid YAML: {exc}') from None
    node: Any = value
    for part in reversed(key.strip().split('.')):
        node = {part: node}
    return node


def load_config(path: Optional[str | Path] = None, overrides: Iterable[str] = (),
                updates: Iterable[Mapping] = ()) -> dict:
    """Defaults, then the YAML at `path`, then `updates` dicts, then `overrides` strings."""
    cfg = default_config()
    if path:
        try:
            user = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f'cannot read config {path}: {exc}') from None
        if not isinstance(user, Mapping):
            raise ConfigError(f'config {path} must be a YAML mapping')
        cfg = merge(cfg, user)
    for upd in updates:
        cfg = merge(cfg, upd)
    for text in overrides:
        cfg = merge(cfg, parse_override(text))
    return cfg


def save_config(cfg: Mapping, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(dict(cfg), sort_keys=False))


def flat(cfg: Mapping, prefix: str = '') -> dict[str, Any]:
    """{'train.lr': 0.002, ...}: scalar leaves only (lists become strings), for hparams."""
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        name = f'{prefix}{key}'
        if isinstance(value, Mapping):
            out.update(flat(value, name + '.'))
        elif isinstance(value, (int, float, str, bool)):
            out[name] = value
        elif value is None:
            out[name] = 'none'
        else:
            out[name] = str(value)
    return out
