"""Schema migrations: small functions applied in order, each in its own transaction.

The schema version is the number of migrations applied (PRAGMA user_version). Append new
migrations at the end; never edit one that has shipped. SQL stays portable (no SQLite-only
column types) so the PostgreSQL backend can run the same statements.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["MIGRATIONS"]


def m001_preferences(db: Any) -> None:
    """Stored preference values per scope, and the audit trail of every change."""
    db.execute(
        """CREATE TABLE prefs (
            scope TEXT NOT NULL,
            scope_id TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            updated_at REAL NOT NULL,
            actor TEXT NOT NULL,
            PRIMARY KEY (scope, scope_id, key))"""
    )
    db.execute(
        """CREATE TABLE history (
            id INTEGER PRIMARY KEY,
            scope TEXT NOT NULL,
            scope_id TEXT NOT NULL,
            key TEXT NOT NULL,
            old TEXT,
            new TEXT,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT,
            run_id TEXT,
            step INTEGER)"""
    )
    db.execute("CREATE INDEX history_key ON history (key, id)")


def m002_templates(db: Any) -> None:
    """Saved templates (the built-in ones ship in code)."""
    db.execute(
        """CREATE TABLE templates (
            name TEXT PRIMARY KEY,
            body TEXT NOT NULL,
            created_at REAL NOT NULL,
            actor TEXT NOT NULL)"""
    )


def m003_runs(db: Any) -> None:
    """Training runs: their state (for resume), changes applied mid-run, learning curves."""
    db.execute(
        """CREATE TABLE runs (
            run_id TEXT PRIMARY KEY,
            actor TEXT NOT NULL,
            project TEXT,
            status TEXT NOT NULL,
            stop_reason TEXT,
            iteration INTEGER NOT NULL,
            steps INTEGER NOT NULL,
            state TEXT NOT NULL,
            started_at REAL NOT NULL,
            updated_at REAL NOT NULL)"""
    )
    db.execute(
        """CREATE TABLE run_changes (
            id INTEGER PRIMARY KEY,
            run_id TEXT NOT NULL,
            step INTEGER NOT NULL,
            iteration INTEGER NOT NULL,
            key TEXT NOT NULL,
            old TEXT,
            new TEXT,
            source TEXT NOT NULL,
            applied INTEGER NOT NULL,
            at REAL NOT NULL)"""
    )
    db.execute("CREATE INDEX run_changes_run ON run_changes (run_id, id)")
    db.execute(
        """CREATE TABLE curves (
            run_id TEXT NOT NULL,
            epoch INTEGER NOT NULL,
            metric TEXT NOT NULL,
            value REAL,
            at REAL NOT NULL,
            PRIMARY KEY (run_id, epoch, metric))"""
    )
    db.execute("CREATE INDEX curves_at ON curves (at)")


def m004_privacy(db: Any) -> None:
    """Consent, feedback and the privacy audit log (subjects only as pseudonyms)."""
    db.execute(
        """CREATE TABLE consent (
            subject TEXT PRIMARY KEY,
            consented INTEGER NOT NULL,
            opted_out INTEGER NOT NULL,
            updated_at REAL NOT NULL)"""
    )
    db.execute(
        """CREATE TABLE feedback (
            id INTEGER PRIMARY KEY,
            subject TEXT NOT NULL,
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            prediction TEXT,
            actual TEXT,
            correct INTEGER NOT NULL,
            at REAL NOT NULL)"""
    )
    db.execute("CREATE INDEX feedback_series ON feedback (model, version, id)")
    db.execute("CREATE INDEX feedback_subject ON feedback (subject)")
    db.execute("CREATE INDEX feedback_at ON feedback (at)")
    db.execute(
        """CREATE TABLE feedback_refused (
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            reason TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (model, version, reason))"""
    )
    db.execute(
        """CREATE TABLE data_audit (
            id INTEGER PRIMARY KEY,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            action TEXT NOT NULL,
            subject TEXT,
            detail TEXT)"""
    )
    db.execute("CREATE INDEX data_audit_subject ON data_audit (subject)")
    db.execute("CREATE INDEX data_audit_at ON data_audit (at)")
    db.execute("CREATE TABLE maintenance (task TEXT PRIMARY KEY, last_run REAL NOT NULL)")


def m005_monitoring(db: Any) -> None:
    """Monitoring samples and alerts."""
    db.execute(
        """CREATE TABLE monitor_samples (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            accuracy REAL,
            latency_ms REAL,
            at REAL NOT NULL)"""
    )
    db.execute("CREATE INDEX monitor_samples_series ON monitor_samples (model, version, id)")
    db.execute("CREATE INDEX monitor_samples_at ON monitor_samples (at)")
    db.execute(
        """CREATE TABLE monitor_series (
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            last_at REAL NOT NULL,
            PRIMARY KEY (model, version))"""
    )
    db.execute(
        """CREATE TABLE drift_results (
            id INTEGER PRIMARY KEY,
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            method TEXT NOT NULL,
            score REAL NOT NULL,
            p_value REAL,
            drifted INTEGER NOT NULL,
            at REAL NOT NULL)"""
    )
    db.execute("CREATE INDEX drift_results_series ON drift_results (model, version, id)")
    db.execute("CREATE INDEX drift_results_at ON drift_results (at)")
    db.execute(
        """CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            condition TEXT NOT NULL,
            model TEXT NOT NULL,
            version TEXT NOT NULL,
            message TEXT NOT NULL,
            at REAL NOT NULL,
            resolved_at REAL)"""
    )
    db.execute("CREATE INDEX alerts_at ON alerts (at)")


def m006_registry(db: Any) -> None:
    """Model registry: versions and the active pointer's moves."""
    db.execute(
        """CREATE TABLE model_versions (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            version TEXT NOT NULL,
            framework TEXT NOT NULL,
            status TEXT NOT NULL,
            metrics TEXT NOT NULL,
            config TEXT NOT NULL,
            tags TEXT NOT NULL,
            source_uri TEXT,
            description TEXT NOT NULL,
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            accuracy REAL,
            latency_ms REAL,
            memory_mb REAL,
            UNIQUE (name, version))"""
    )
    # select() ranks from this index alone; by accuracy it is a backwards index walk.
    db.execute("CREATE INDEX model_versions_rank ON model_versions "
               "(name, accuracy, status, latency_ms, memory_mb)")
    db.execute(
        """CREATE TABLE model_moves (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL,
            kind TEXT NOT NULL,
            from_version TEXT,
            to_version TEXT,
            at REAL NOT NULL,
            actor TEXT NOT NULL,
            reason TEXT)"""
    )
    db.execute("CREATE INDEX model_moves_name ON model_moves (name, id)")


def m007_experiments(db: Any) -> None:
    """A/B experiments, sticky assignments and outcomes."""
    db.execute(
        """CREATE TABLE experiments (
            name TEXT PRIMARY KEY,
            control TEXT NOT NULL,
            treatment TEXT NOT NULL,
            metric TEXT NOT NULL,
            higher_is_better INTEGER NOT NULL,
            salt TEXT NOT NULL,
            traffic_split_ratio REAL,
            statistical_significance REAL,
            min_sample_size INTEGER,
            experiment_duration_days INTEGER,
            anonymized INTEGER NOT NULL,
            started_at REAL NOT NULL,
            created_at REAL NOT NULL,
            created_by TEXT NOT NULL,
            decision TEXT,
            concluded_at REAL,
            concluded_by TEXT,
            conclusion TEXT)"""
    )
    db.execute(
        """CREATE TABLE experiment_splits (
            experiment TEXT NOT NULL,
            since REAL NOT NULL,
            ratio REAL NOT NULL,
            PRIMARY KEY (experiment, since))"""
    )
    db.execute(
        """CREATE TABLE experiment_units (
            experiment TEXT NOT NULL,
            unit TEXT NOT NULL,
            arm TEXT NOT NULL,
            assigned_at REAL NOT NULL,
            PRIMARY KEY (experiment, unit))"""
    )
    # Assignments counted per traffic-split period and arm, for the sample-ratio check: a
    # counter updated once per batch costs far less than an index over every unit.
    db.execute(
        """CREATE TABLE experiment_assignments (
            experiment TEXT NOT NULL,
            since REAL NOT NULL,
            arm TEXT NOT NULL,
            n INTEGER NOT NULL,
            PRIMARY KEY (experiment, since, arm))"""
    )
    db.execute(
        """CREATE TABLE experiment_outcomes (
            experiment TEXT NOT NULL,
            unit TEXT NOT NULL,
            arm TEXT NOT NULL,
            value REAL NOT NULL,
            at REAL NOT NULL)"""
    )
    # Covers analyze()'s per-arm sums; ordered by time, so new rows append instead of
    # landing on random pages (which would rewrite most of the index on every flush).
    db.execute("CREATE INDEX experiment_outcomes_arm ON experiment_outcomes "
               "(experiment, arm, at, value)")
    # Retention cleanup deletes by age; times only grow, so these indexes append cheaply.
    db.execute("CREATE INDEX experiment_units_at ON experiment_units (assigned_at)")
    db.execute("CREATE INDEX experiment_outcomes_at ON experiment_outcomes (at)")


MIGRATIONS: list[Callable[[Any], None]] = [
    m001_preferences,
    m002_templates,
    m003_runs,
    m004_privacy,
    m005_monitoring,
    m006_registry,
    m007_experiments,
]
