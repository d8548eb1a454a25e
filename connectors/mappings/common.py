"""What every mapping shares: where an agency's events are placed."""

from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from ioc.core.events import AdminUnit, Agency


class AgencyUnit(BaseModel):
    """Where an agency sits: its province and, for a commune's, the commune."""

    province_code: str | None = Field(None, pattern=r"^\d{2}$")
    commune_code: str | None = Field(None, pattern=r"^\d{5}$")
    name: str | None = None


@dataclass(frozen=True)
class AgencyPlaces:
    """Agency code -> the event's unit and agency. Sources name agencies, not places: the
    `agencies` option says where each sits; one not listed is a province-level agency."""

    province_code: str
    agencies: Mapping[str, AgencyUnit] = field(default_factory=dict)

    def place(self, agency_code: str, name: str | None = None) -> tuple[AdminUnit, Agency]:
        where = self.agencies.get(agency_code, AgencyUnit())
        unit = AdminUnit(province_code=where.province_code or self.province_code,
                         commune_code=where.commune_code)
        return unit, Agency(code=agency_code, name=where.name or name)

