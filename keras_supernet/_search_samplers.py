"""Optuna samplers of `keras_supernet.search` (imported only by a search).

Three samplers serve a search that must resume exactly:

- `KeyedSampler` runs a fresh Optuna sampler (`RandomSampler`,
  `NSGAIISampler`) for every trial, seeded with a function of the search
  seed and the trial's *key*: its number, less the failed trials before it.
  Optuna's own samplers draw from one random stream per process, so a
  search restarted after a crash would replay the stream from its start;
  here the draws of a proposal depend only on the seed, its key and the
  trials finished before it, all of which a restarted search finds again
  in the storage. A trial interrupted by a crash is marked failed when the
  search restarts, and the next trial takes its key.
- `EnumerationSampler` proposes the paths in index order: the first path
  that no trial has claimed yet (a failed trial's path is free again), so
  that several processes enumerate one space together.
- `RegularizedEvolutionSampler` (regularized, "aging" evolution) and
  `LocalSearchSampler` (best-first local search) are seeded per trial key
  like `KeyedSampler`, and read what has been scored from the storage.

Each trial records which process runs it (`worker`: host and pid) as soon as
it exists, so that a restarted search can tell its own dead trials from
those of live processes sharing the study (see `stale_trials`).
"""

import os
import socket

import numpy as np
import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from keras_supernet import runs
from keras_supernet import sampling

WORKER_ATTR = "worker"
# The path a sampler proposed, where a repair moved the trial to another.
PROPOSAL_ATTR = "proposal"
# Fresh random paths a repair tries after one lands on a path already proposed.
REDRAWS = 3


def worker_id():
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _mark_worker(study, trial):
    # Optuna's own samplers write trial attributes through the storage in
    # before_trial too; this is the first moment the trial exists.
    study._storage.set_trial_user_attr(trial._trial_id, WORKER_ATTR, worker_id())


def stale_trials(study):
    """Running trials of dead processes of this host.

    A trial whose process was killed (kill -9, a crash, a power cut) stays
    RUNNING in the storage. Those of this host whose pid is gone, or is
    this very process (which has not started a trial yet: a previous
    process had the same pid), are stale. Trials of other hosts are left to
    Optuna's heartbeat (`grace_period`).
    """
    me = worker_id()
    stale = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = trial.user_attrs.get(WORKER_ATTR)
        if not isinstance(worker, dict) or worker.get("host") != me["host"]:
            continue
        pid = worker.get("pid")
        if pid == me["pid"] or not runs.process_is_alive(pid):
            stale.append(trial.number)
    return stale


def trial_key(study, trial):
    failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
    return trial.number - sum(1 for t in failed if t.number < trial.number)


def distributions(space):
    return {
        name: CategoricalDistribution(list(labels))
        for name, labels in zip(space.choice_names, space.candidate_labels)
    }


def trial_path(space, trial):
    """The path index of a trial, or None while its path is not set."""
    try:
        return space.index(tuple(trial.params[n] for n in space.choice_names))
    except KeyError:
        return None


def proposed_paths(space, study, trial):
    """The paths the trials of `study` other than `trial` have proposed (a
    failed trial's path is free again)."""
    proposed = set()
    for other in study.get_trials(deepcopy=False):
        if other.number == trial.number or other.state == TrialState.FAIL:
            continue
        path = trial_path(space, other)
        if path is not None:
            proposed.add(path)
    return proposed


def params_of(space, index):
    """The Optuna parameters (choice name -> candidate label) of a path."""
    return {
        name: labels[k]
        for name, labels, k in zip(
            space.choice_names, space.candidate_labels, space.resolve(index)
        )
    }


class KeyedSampler(optuna.samplers.BaseSampler):
    """A fresh inner sampler per trial, seeded from (seed, trial key).

    Args:
        factory: Called with a seed, returns an Optuna sampler. The inner
            sampler must keep no state between trials other than what it
            writes in the study (true of `RandomSampler` and
            `NSGAIISampler`, whose generations live in the storage).
        seed: The search seed.
    """

    def __init__(self, factory, seed):
        self._factory = factory
        self._seed = seed
        self._inner = factory(sampling.derived_seed(seed, 0))

    def before_trial(self, study, trial):
        _mark_worker(study, trial)
        key = trial_key(study, trial)
        self._inner = self._factory(sampling.derived_seed(self._seed, key))
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self._inner.sample_independent(
            study, trial, param_name, param_distribution
        )

    def after_trial(self, study, trial, state, values):
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self):
        # Seeds come from the trial keys; nothing to reseed.
        pass


class EnumerationSampler(optuna.samplers.BaseSampler):
    """Proposes the first path, in index order, that no trial has claimed.

    Args:
        space: The `SearchSpace`.
    """

    def __init__(self, space):
        self._space = space
        self._distributions = distributions(space)

    def before_trial(self, study, trial):
        _mark_worker(study, trial)

    def infer_relative_search_space(self, study, trial):
        return dict(self._distributions)

    def sample_relative(self, study, trial, search_space):
        claimed = proposed_paths(self._space, study, trial)
        index = 0
        while index in claimed and index < self._space.num_paths - 1:
            index += 1
        # With every path claimed (processes racing at the end), this
        # proposes a duplicate, which the search skips.
        return params_of(self._space, index)

    def sample_independent(self, study, trial, param_name, param_distribution):
        raise RuntimeError(
            f"EnumerationSampler proposes every choice; {param_name!r} is "
            "not a choice of the space."
        )


def default_tournament(population_size):
    """The default tournament size of regularized evolution: a quarter of
    the population, at least 2."""
    return max(2, population_size // 4)


class _HistorySampler(optuna.samplers.BaseSampler):
    """A sampler whose proposal is a function of the trials in the storage
    and a generator seeded from (seed, trial key): `propose` decides it."""

    def __init__(self, space, seed):
        self._space = space
        self._seed = seed
        self._distributions = distributions(space)

    def before_trial(self, study, trial):
        _mark_worker(study, trial)

    def infer_relative_search_space(self, study, trial):
        return dict(self._distributions)

    def _rng(self, study, trial):
        return np.random.default_rng(
            sampling.derived_seed(self._seed, trial_key(study, trial))
        )

    def _history(self, study, trial):
        """The paths other trials have proposed (a set), and the scored ones
        as `(trial number, path, objective value)` in trial order.

        A path this sampler proposed that a repair moved elsewhere counts as
        proposed too: otherwise the climb would propose the same infeasible
        neighbour again and again, each time repaired onto a path already
        scored, and spend its proposals on duplicates.
        """
        proposed = set()
        scored = []
        for other in study.get_trials(deepcopy=False):
            if other.number == trial.number or other.state == TrialState.FAIL:
                continue
            path = trial_path(self._space, other)
            if path is None:
                continue
            proposed.add(path)
            if PROPOSAL_ATTR in other.user_attrs:
                proposed.add(other.user_attrs[PROPOSAL_ATTR])
            if other.state == TrialState.COMPLETE:
                scored.append((other.number, path, other.values[0]))
        scored.sort()
        return proposed, scored

    @staticmethod
    def _rank_key(study):
        """Sort key of a scored member: the best first; ties: the older."""
        sign = (
            1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1.0
        )
        return lambda member: (-sign * member[2], member[0])

    def _random_unproposed(self, rng, proposed):
        n = self._space.num_paths
        if len(proposed) >= n:
            return int(rng.integers(n))
        if n <= 4 * len(proposed) + 64:
            free = [p for p in range(n) if p not in proposed]
            return int(free[rng.integers(len(free))])
        while True:
            index = int(rng.integers(n))
            if index not in proposed:
                return index

    def _unproposed_neighbour(self, rng, path, proposed):
        """A one-choice neighbour of `path` that no trial has proposed,
        drawn uniformly; None if every neighbour has been."""
        neighbours = self._space.neighbours(path)
        for j in rng.permutation(len(neighbours)):
            index = neighbours[int(j)]
            if index not in proposed:
                return index
        return None

    def propose(self, study, trial):
        """The path index that trial `trial` is to score."""
        raise NotImplementedError

    def sample_relative(self, study, trial, search_space):
        return params_of(self._space, self.propose(study, trial))

    def sample_independent(self, study, trial, param_name, param_distribution):
        raise RuntimeError(
            f"{type(self).__name__} proposes every choice; "
            f"{param_name!r} is not a choice of the space."
        )


class RegularizedEvolutionSampler(_HistorySampler):
    """Regularized ("aging") evolution of Real et al. 2019, one objective.

    The population is the last `population_size` scored paths, by trial
    number: each new one pushes the oldest out, whatever its score. While
    fewer paths are scored, a proposal is a uniform draw among the paths no
    trial has proposed. Then each proposal samples `tournament_size`
    members of the population (without replacement), takes the best of
    them by the objective (ties: the older), and mutates exactly one of its
    choices to another candidate: a choice and a candidate drawn uniformly
    among the neighbours no trial has proposed yet (all one-choice
    neighbours of a path, in random order); if every neighbour has been
    proposed, a uniform draw among the paths no trial has proposed.

    A proposal draws from a fresh generator seeded from (seed, trial key)
    (see `trial_key`) and reads only the trials in the storage, so that a
    search restarted after a crash proposes the same paths.

    Args:
        space: The `SearchSpace`.
        seed: The search seed.
        population_size: Int >= 2.
        tournament_size: Int in [1, population_size]; default
            `default_tournament(population_size)`.
    """

    def __init__(self, space, seed, population_size, tournament_size=None):
        super().__init__(space, seed)
        self.population_size = int(population_size)
        self.tournament_size = min(
            self.population_size,
            int(tournament_size or default_tournament(self.population_size)),
        )

    def propose(self, study, trial):
        rng = self._rng(study, trial)
        proposed, scored = self._history(study, trial)
        if len(scored) < self.population_size:
            return self._random_unproposed(rng, proposed)
        population = scored[-self.population_size :]
        picks = rng.choice(len(population), self.tournament_size, replace=False)
        parent = min((population[int(i)] for i in picks), key=self._rank_key(study))
        child = self._unproposed_neighbour(rng, parent[1], proposed)
        return child if child is not None else self._random_unproposed(rng, proposed)


class LocalSearchSampler(_HistorySampler):
    """Local search (best-first hill climbing), one objective.

    The first `initial_size` proposals are uniform draws among the paths no
    trial has proposed. Then each proposal is a one-choice neighbour, not
    proposed yet, of the best scored path (ties: the older); once every
    neighbour of that path has been proposed (a local optimum, or a path
    whose neighbourhood is spent), of the next best, and so on: the search
    climbs from the best path found, and when it is stuck, carries on from
    the best paths it left behind. Only when every scored path's
    neighbourhood is spent is a proposal a uniform draw again.

    On scores where neighbouring paths score alike (the choices add up,
    as in a supernet's), this is what finds the top of a space with few
    evaluations (White et al. 2021, "Local search is state of the art for
    neural architecture search benchmarks"); measured in
    docs/results/search.md. Seeded per trial key and read from the storage
    like `RegularizedEvolutionSampler`, so it resumes exactly.

    Args:
        space: The `SearchSpace`.
        seed: The search seed.
        initial_size: Int >= 1, the random paths it starts from.
    """

    def __init__(self, space, seed, initial_size):
        super().__init__(space, seed)
        self.initial_size = int(initial_size)

    def propose(self, study, trial):
        rng = self._rng(study, trial)
        proposed, scored = self._history(study, trial)
        if len(scored) < self.initial_size:
            return self._random_unproposed(rng, proposed)
        for member in sorted(scored, key=self._rank_key(study)):
            child = self._unproposed_neighbour(rng, member[1], proposed)
            if child is not None:
                return child
        return self._random_unproposed(rng, proposed)


class RepairingSampler(optuna.samplers.BaseSampler):
    """Moves the proposals of another sampler into the feasible region.

    Under a tight constraint on a large space almost every proposal breaks
    it (a latency budget that 0.015% of a 2-million-path space meets):
    proposals that are not scored teach the evolution nothing, and the
    search ends before it has scored a path. Here every proposal of `inner`
    (all of its choices, relative and independent) goes through `repair`
    before the trial takes it, the way once-for-all and SPOS keep their
    populations within a FLOPs or latency budget by resampling. A repair
    that lands on a path already proposed is followed by up to `REDRAWS`
    repairs of fresh random paths; and the proposal a repair moved is
    recorded (`PROPOSAL_ATTR`), so that a climbing sampler does not
    propose it again (measured on 211 feasible paths of 3**20: local
    search scored 75 new paths in 400 proposals without either, 211 with
    both).

    Args:
        inner: The sampler whose proposals are repaired (`KeyedSampler`,
            `RegularizedEvolutionSampler`, `LocalSearchSampler`).
        space: The `SearchSpace`.
        repair: Called with a path index, a `numpy` generator and the set
            of paths other trials have proposed; returns a path index (the
            same one if it is feasible and new, or cannot be made so).
        seed: The search seed; the generator of a trial is seeded from it
            and the trial's key (see `trial_key`), so a restarted search
            repairs the same way.
    """

    def __init__(self, inner, space, repair, seed):
        self._inner = inner
        self._space = space
        self._repair = repair
        self._seed = seed
        self._distributions = distributions(space)

    def before_trial(self, study, trial):
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return dict(self._distributions)

    def sample_relative(self, study, trial, search_space):
        inner_space = self._inner.infer_relative_search_space(study, trial)
        params = dict(self._inner.sample_relative(study, trial, inner_space))
        # The choices the inner sampler leaves to sample_independent (all of
        # them for random search, the mutated ones for NSGA-II), in the
        # order the objective suggests them.
        for name, distribution in self._distributions.items():
            if name not in params:
                params[name] = self._inner.sample_independent(
                    study, trial, name, distribution
                )
        index = self._space.index(tuple(params[n] for n in self._space.choice_names))
        # Key 1: not the stream of the inner sampler (key 0 of the seed).
        rng = np.random.default_rng(
            sampling.derived_seed(self._seed, trial_key(study, trial), 1)
        )
        taken = proposed_paths(self._space, study, trial)
        repaired = self._repair(index, rng, taken)
        for _ in range(REDRAWS):
            if repaired not in taken:
                break
            # Repaired onto a path already proposed (the feasible region near
            # the proposal is spent): a fresh random path, repaired, may reach
            # one that is not, where a duplicate would teach the search nothing.
            repaired = self._repair(
                int(rng.integers(self._space.num_paths)), rng, taken
            )
        if repaired != index:
            # Read back by `_HistorySampler._history` (and kept for a
            # restarted search: a failed trial's record is ignored there).
            study._storage.set_trial_user_attr(
                trial._trial_id, PROPOSAL_ATTR, int(index)
            )
        return params_of(self._space, repaired)

    def sample_independent(self, study, trial, param_name, param_distribution):
        raise RuntimeError(
            "RepairingSampler proposes every choice; "
            f"{param_name!r} is not a choice of the space."
        )

    def after_trial(self, study, trial, state, values):
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self):
        pass
