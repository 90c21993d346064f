"""Which API version to use for each optional child kind, chosen from what the cluster serves.

The GA versions (`autoscaling/v2`, `policy/v1`) are preferred; the local 1.20 control plane and
older clusters only serve `autoscaling/v2beta2` and `policy/v1beta1`, whose fields we use are the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

HPA_PREFERENCE = ("autoscaling/v2", "autoscaling/v2beta2")
PDB_PREFERENCE = ("policy/v1", "policy/v1beta1")


@dataclass(frozen=True)
class ApiVersions:
    hpa: str = HPA_PREFERENCE[0]
    pdb: str = PDB_PREFERENCE[0]


class UnsupportedCluster(Exception):
    pass


def choose_api_versions(served: Iterable[str]) -> ApiVersions:
    served = set(served)

    def pick(preference: tuple[str, ...], what: str) -> str:
        for version in preference:
            if version in served:
                return version
        raise UnsupportedCluster(f"the cluster serves none of {', '.join(preference)} for {what}")

    return ApiVersions(
        hpa=pick(HPA_PREFERENCE, "HorizontalPodAutoscaler"), pdb=pick(PDB_PREFERENCE, "PodDisruptionBudget")
    )
