"""``GET /api/v1/duplicates``: the index's groups of near-identical photos (see
:mod:`frozenlens.engine.neardup`); the threshold is checked by :func:`frozenlens.request.check_threshold`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ...request import DUPLICATE_THRESHOLD
from ..shapes import duplicates_json
from ..state import ServerState
from .models import DuplicateGroupOut, DuplicatesOut, GroupCopyOut, GroupMemberOut


def add_duplicates_route(router: APIRouter, state: ServerState) -> None:
    """Add the route to ``router`` (the ``/api/v1`` router)."""

    @router.get("/duplicates", response_model=DuplicatesOut, summary="Groups of near-identical photos")
    def duplicates(
        threshold: Annotated[float | None, Query(gt=0, le=1,
            description=f"least cosine of two photos' visual vectors in one group, in (0, 1] "
                        f"(default {DUPLICATE_THRESHOLD})")] = None,
    ) -> DuplicatesOut:
        with state.engine() as engine:
            groups = duplicates_json(engine, threshold)
        out = [
            DuplicateGroupOut(
                **{**g, "members": [GroupMemberOut(**m, thumbnail_url=f"/api/v1/images/{m['id']}/thumbnail")
                                    for m in g["members"]],
                   "copies": [GroupCopyOut(**c) for c in g["copies"]]})
            for g in groups
        ]
        return DuplicatesOut(threshold=DUPLICATE_THRESHOLD if threshold is None else threshold, groups=out)
