"""From a ``VenueConfig`` to a running venue: symbol specs from the store's metadata, the
replayed feeds, and the FIX acceptor with the QUOTE and TRADE sessions.

Everything but ``acceptor_settings`` (the engine's pydantic settings for ``start_acceptor``)
runs without a network.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from live.fix.config import AcceptorSettings, CredentialsSettings, SessionSettings
from live.venue.app import Venue
from live.venue.config import VenueConfig
from live.venue.errors import VenueError
from live.venue.faults import Faults
from live.venue.feed import Feed, load_feeds
from live.venue.spec import SymbolSpec, spec_from_meta
from market.config import SymbolMeta
from market.timeframes import bars_per_year


def build_specs(vc: VenueConfig, metas: Mapping[str, SymbolMeta | None]) -> dict[str, SymbolSpec]:
    """One SymbolSpec per configured symbol; metadata: the config's ``meta``, else ``metas``."""
    out = {}
    for name, s in vc.symbols.items():
        meta = s.meta or metas.get(name)
        if meta is None:
            raise VenueError(f"symbols.{name}: no metadata (costs, lot) in the history store or "
                             "the config; give symbols." + name + ".meta")
        bpy = bars_per_year(vc.replay.timeframe, meta.calendar)
        out[name] = spec_from_meta(name, s.id, s.lot_size, meta, bpy, tick_size=s.tick_size,
                                   financing=vc.financing)
    return out


def faults_from(vc: VenueConfig) -> Faults:
    f = vc.faults
    faults = Faults(rejects=f.reject_next, delay_bars=f.delay_bars, stale_bars=f.stale_bars)
    if f.partial_fraction is not None:
        faults.partial_fills(f.partial_fraction, f.partial_orders)
    return faults


def build_venue(vc: VenueConfig, feeds: Mapping[str, Feed],
                metas: Mapping[str, SymbolMeta | None]) -> Venue:
    return Venue(build_specs(vc, metas), feeds, cash=vc.account.cash, account=vc.account.id,
                 quote_sub_id=vc.quote_sub_id, trade_sub_id=vc.trade_sub_id,
                 require_stop=vc.require_stop, faults=faults_from(vc),
                 schedule=vc.faults.schedule)


def venue_from_store(vc: VenueConfig, store: Path,
                     fallback: Mapping[str, SymbolMeta] | None = None) -> Venue:
    """Bars and metadata from the history store at ``store`` (``fallback``: metadata of the
    EMP config's ``data.symbols`` for symbols the store has none for)."""
    from market.store import HistoryStore

    hs = HistoryStore(store)
    metas = {s: hs.meta(s) or (fallback or {}).get(s) for s in vc.symbols}
    feeds = load_feeds(list(vc.symbols), vc.replay.timeframe, vc.replay.start, vc.replay.end,
                       store)
    return build_venue(vc, feeds, metas)


def acceptor_settings(vc: VenueConfig, home: Path) -> AcceptorSettings:
    """The engine's AcceptorSettings for the venue: one port, two sessions (same CompIDs,
    SenderSubIDs QUOTE / TRADE), each with its own message store, sequence numbers reset on
    logon (141=Y, cTrader style: the venue keeps no FIX state across logons; the client
    reconciles with H / AF / AN after each one)."""
    store_dir = vc.store_dir if vc.store_dir is not None else home / "venue"
    creds = (CredentialsSettings(**vc.credentials.model_dump())
             if vc.credentials is not None else None)
    sessions = [SessionSettings(sender_comp_id=vc.comp_id, target_comp_id=vc.client_comp_id,
                                sender_sub_id=sub, heartbeat_interval=vc.heartbeat_s,
                                reset_on_logon=True, credentials=creds,
                                store_path=store_dir / f"{role}.sqlite")
                for role, sub in (("quote", vc.quote_sub_id), ("trade", vc.trade_sub_id))]
    return AcceptorSettings(host=vc.host, port=vc.port, sessions=sessions)
