"""Running the notebooks: profiles, the papermill runner, incremental runs, sweeps, report indexes, figures."""
