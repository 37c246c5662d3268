/**
 * Single-server membership changes (Raft dissertation §4.1): each change adds, promotes or
 * removes one server, so any two consecutive configurations share a majority.
 */
import { InvalidArgumentError } from "../errors.ts";
import type { Config, ConfigChange, NodeId } from "./types.ts";

/** Is `id` a voter in `config`? */
export function isVoter(config: Config, id: NodeId): boolean {
  return config.voters.includes(id);
}

/** Is `id` a voter or learner in `config`? */
export function isMember(config: Config, id: NodeId): boolean {
  return config.voters.includes(id) || config.learners.includes(id);
}

/** Every member (voters, then learners). */
export function members(config: Config): NodeId[] {
  return [...config.voters, ...config.learners];
}

/**
 * The configuration that results from applying `change` to `config`. Throws
 * InvalidArgumentError for a change that makes no sense (adding a present voter, promoting
 * a non-learner, removing a non-member, removing the last voter).
 */
export function applyChange(config: Config, change: ConfigChange): Config {
  const voters = config.voters.filter((v) => v !== ("id" in change ? change.id : ""));
  const learners = config.learners.filter((v) => v !== ("id" in change ? change.id : ""));
  const addresses = { ...config.addresses };
  switch (change.type) {
    case "bootstrap":
      throw new InvalidArgumentError("bootstrap is not a change to an existing configuration");
    case "addVoter":
      if (isVoter(config, change.id)) {
        throw new InvalidArgumentError(`${change.id} is already a voter`);
      }
      voters.push(change.id);
      addresses[change.id] = change.address;
      break;
    case "addLearner":
      if (isMember(config, change.id)) {
        throw new InvalidArgumentError(`${change.id} is already a member`);
      }
      learners.push(change.id);
      addresses[change.id] = change.address;
      break;
    case "promote":
      if (!config.learners.includes(change.id)) {
        throw new InvalidArgumentError(`${change.id} is not a learner`);
      }
      voters.push(change.id);
      break;
    case "remove":
      if (!isMember(config, change.id)) {
        throw new InvalidArgumentError(`${change.id} is not a member`);
      }
      if (voters.length === 0) throw new InvalidArgumentError("cannot remove the last voter");
      delete addresses[change.id];
      break;
    default: {
      const never: never = change;
      throw new InvalidArgumentError(`unknown change ${JSON.stringify(never)}`);
    }
  }
  return { voters, learners, addresses };
}
