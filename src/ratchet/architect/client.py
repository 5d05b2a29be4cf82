"""A small client of the Architect's REST API: post feedback, follow a job to its end, list and act on jobs.

The current trace context travels in the ``traceparent`` header, so the Architect's request and job
spans join the caller's trace.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from ratchet.core import auth
from ratchet.core.errors import ConflictError, NotFoundError, RatchetError, TestsFailedError, UserError

FINAL = ("succeeded", "failed")


class ArchitectClient:
    def __init__(self, url: str, *, timeout: float = 30.0, token: str | None = None):
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, timeout=timeout, headers=auth.header(token))

    def _headers(self) -> dict[str, str]:
        from opentelemetry import propagate

        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        return carrier

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            r = self.http.request(method, path, headers=self._headers(), **kwargs)
        except httpx.HTTPError as exc:
            raise UserError(f"cannot reach the architect at {self.url}: {exc}", field="url",
                            fix="start it (`ratchet up` or `ratchet serve architect`), or pass --url") from None
        if r.status_code >= 400:
            try:
                body = r.json()
            except ValueError:
                body = {"detail": r.text}
            error = {404: NotFoundError, 409: ConflictError}.get(r.status_code, UserError if r.status_code < 500
                                                                 else RatchetError)
            raise error(f"architect: {body.get('detail')}", field=body.get("field"), fix=body.get("fix"))
        return r.json()

    def post_feedback(self, text: str, *, version: str | None = None, conversation_id: str | None = None) -> dict:
        body = {"text": text, "version": version, "conversation_id": conversation_id}
        return self._call("POST", "/feedback", json={k: v for k, v in body.items() if v is not None})

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/jobs/{job_id}")

    def jobs(self, *, state: str | None = None, limit: int = 50) -> dict[str, Any]:
        params = {"limit": limit, **({"state": state} if state else {})}
        return self._call("GET", "/jobs", params=params)

    def action(self, job_id: str, what: str) -> dict[str, Any]:
        """``approve`` or ``abandon`` a job."""
        if what == "abandon":
            return self._call("DELETE", f"/jobs/{job_id}")
        return self._call("POST", f"/jobs/{job_id}/{what}")

    def follow(self, job_id: str, *, timeout: float = 900, interval: float = 0.5,
               on_step: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Poll the job until it succeeds, fails or waits for approval; report each new log entry."""
        deadline = time.monotonic() + timeout
        shown = 0
        while True:
            job = self.job(job_id)
            for entry in job["log"][shown:]:
                if on_step:
                    on_step(entry)
            shown = len(job["log"])
            if job["state"] in FINAL or job["state"] == "needs_approval":
                return job
            if time.monotonic() > deadline:
                raise UserError(f"job {job_id} is still {job['state']} after {timeout:g} s", field="timeout",
                                fix=f"follow it later: GET {self.url}/jobs/{job_id}")
            time.sleep(interval)

    @staticmethod
    def raise_for_outcome(job: dict[str, Any]) -> None:
        """Raise the job's error if it failed (tests failing → ``TestsFailedError``)."""
        if job["state"] == "needs_approval":
            raise ConflictError(f"job {job['id']} made a {job['bump']} change that waits for approval",
                                field="approval", fix=f"POST /jobs/{job['id']}/approve on the architect")
        if job["state"] != "failed":
            return
        err = job.get("error") or {}
        kind = TestsFailedError if (err.get("field") or "").startswith("tiers.") else UserError
        raise kind(f"job {job['id']} failed at {err.get('step')}: {err.get('detail')}", field=err.get("field"),
                   fix=err.get("fix"))
