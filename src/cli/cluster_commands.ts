/** `mokv servers|members|member remove|leader transfer|leave`: cluster administration. */
import type { Command } from "./command.ts";
import { ExitCode, UsageError } from "./exit_codes.ts";
import { addrsOf } from "./flags.ts";
import { json, table } from "./format.ts";

const servers: Command = {
  words: ["servers"],
  synopsis: "",
  summary: "list the Raft servers (GetServers)",
  flags: {},
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const list = await (await ctx.client()).servers();
    if (ctx.json) {
      ctx.io.out(json({
        servers: list.map((s) => ({
          id: s.id,
          rpc_addr: s.rpcAddr,
          is_leader: s.isLeader,
          is_voter: s.isVoter,
        })),
      }));
    } else {
      ctx.io.out(table(
        ["ID", "RPC ADDR", "LEADER", "VOTER"],
        list.map((s) => [s.id, s.rpcAddr, String(s.isLeader), String(s.isVoter)]),
      ));
    }
    return ExitCode.OK;
  },
};

const members: Command = {
  words: ["members"],
  synopsis: "",
  summary: "list the gossip members and their state",
  flags: {},
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const list = await (await ctx.client()).members();
    if (ctx.json) {
      ctx.io.out(json({
        members: list.map((m) => ({
          name: m.name,
          gossip_addr: m.gossipAddr,
          rpc_addr: m.rpcAddr,
          state: m.state,
        })),
      }));
    } else {
      ctx.io.out(table(
        ["NAME", "GOSSIP ADDR", "RPC ADDR", "STATE"],
        list.map((m) => [m.name, m.gossipAddr, m.rpcAddr, m.state]),
      ));
    }
    return ExitCode.OK;
  },
};

const memberRemove: Command = {
  words: ["member", "remove"],
  synopsis: "ID",
  summary: "remove server ID from the Raft configuration",
  flags: {},
  minArgs: 1,
  maxArgs: 1,
  async run(ctx) {
    await (await ctx.client()).removeServer(ctx.args[0]);
    ctx.io.out(ctx.json ? json({ removed: ctx.args[0] }) : `removed ${ctx.args[0]}\n`);
    return ExitCode.OK;
  },
};

const leaderTransfer: Command = {
  words: ["leader", "transfer"],
  synopsis: "[ID]",
  summary: "hand leadership to server ID (default: any up-to-date voter)",
  flags: {},
  minArgs: 0,
  maxArgs: 1,
  async run(ctx) {
    const leader = await (await ctx.client()).transferLeadership(ctx.args[0]);
    ctx.io.out(ctx.json ? json({ leader_id: leader }) : `leader is now ${leader}\n`);
    return ExitCode.OK;
  },
};

const leave: Command = {
  words: ["leave"],
  synopsis: "",
  summary: "ask the node at --addr to leave the cluster",
  details: "Needs exactly one address: the node that leaves.",
  flags: {},
  discover: false,
  minArgs: 0,
  maxArgs: 0,
  async run(ctx) {
    const addrs = addrsOf(ctx.flags);
    if (addrs.length !== 1) throw new UsageError("leave needs exactly one --addr");
    await (await ctx.client()).leave(addrs[0]);
    ctx.io.out(ctx.json ? json({ left: addrs[0] }) : `${addrs[0]} is leaving the cluster\n`);
    return ExitCode.OK;
  },
};

/** The administration commands. */
export const CLUSTER_COMMANDS: readonly Command[] = [
  servers,
  members,
  memberRemove,
  leaderTransfer,
  leave,
];
