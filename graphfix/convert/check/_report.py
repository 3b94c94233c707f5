"""Findings and the readiness Report."""

from __future__ import annotations

__all__ = ["Finding", "Report", "FAIL", "WARN", "INFO", "CHECKS"]

from dataclasses import dataclass, field
from typing import Any

FAIL, WARN, INFO = "FAIL", "WARN", "INFO"

#: Check id -> one-line title (research note, section 1.4).
CHECKS: dict[str, str] = {
    "C1": "valid model (onnx.checker, full check)",
    "C2": "IR version",
    "C3": "opset range",
    "C4": "operator domains",
    "C5": "op allow-list (TensorRT)",
    "C6": "per-op restrictions (TensorRT)",
    "C7": "data types",
    "C8": "shapes inferred, only the batch dynamic",
    "C9": "constants folded",
    "C10": "no control flow",
    "C11": "no training-only ops",
    "C12": "size and external data",
    "C13": "hygiene (names, order, inputs)",
    "C14": "fp16 sanity and activation range",
    "C15": "onnxruntime CUDA kernel coverage",
    "C16": "TensorRT-RTX parse and engine build",
    "C17": "explicit quantization: Q/DQ rules (TensorRT)",
}


@dataclass(frozen=True)
class Finding:
    """One checklist result.

    Attributes:
        id: Check id, "C1".."C17".
        severity: "FAIL", "WARN" or "INFO".
        message: What was found, one line.
        fix: How to fix it, one line.
        node: The node (`name (Op)`) or tensor it is about, if any.
        rule: A short stable name of the specific rule inside the check (e.g. "maxpool-indices").
    """

    id: str
    severity: str
    message: str
    fix: str = ""
    node: str | None = None
    rule: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "severity": self.severity, "rule": self.rule, "node": self.node,
            "message": self.message, "fix": self.fix,
        }

    def line(self) -> str:
        where = f" [{self.node}]" if self.node else ""
        fix = f" -> {self.fix}" if self.fix else ""
        return f"{self.severity:<4} {self.id:<3} {self.rule}{where}: {self.message}{fix}"


@dataclass
class Report:
    """The readiness verdict for one model and target.

    Attributes:
        ok: True when no finding is a FAIL.
        findings: All findings, in check order.
        target: "tensorrt" or "cuda".
        path: The file checked, if any.
        checks: Ids of the checks that ran.
        probe: Activation-range probe figures (C14), if it ran.
        build: TensorRT-RTX oracle result (C16), if it ran.
    """

    ok: bool
    findings: list[Finding]
    target: str = "tensorrt"
    path: str | None = None
    checks: list[str] = field(default_factory=list)
    probe: dict[str, Any] | None = None
    build: dict[str, Any] | None = None

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == FAIL]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARN]

    def ids(self, severity: str | None = None) -> set[str]:
        """The check ids with a finding (of `severity`, when given)."""
        return {f.id for f in self.findings if severity is None or f.severity == severity}

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "target": self.target,
            "path": self.path,
            "checks": self.checks,
            "counts": {s: sum(1 for f in self.findings if f.severity == s) for s in (FAIL, WARN, INFO)},
            "findings": [f.to_dict() for f in self.findings],
            "probe": self.probe,
            "build": self.build,
        }

    def text(self) -> list[str]:
        """Human-readable lines: verdict, then one line per finding."""
        counts = self.to_dict()["counts"]
        verdict = "READY" if self.ok else "NOT READY"
        head = f"{verdict} for {self.target}: {counts[FAIL]} FAIL, {counts[WARN]} WARN, {counts[INFO]} INFO"
        lines = [f"{self.path}: {head}" if self.path else head]
        lines += ["  " + f.line() for f in self.findings]
        if self.build is not None:
            lines.append(f"  build: {self.build.get('status')} {self.build.get('detail', '')}".rstrip())
        return lines
