// SPDX-License-Identifier: (GPL-2.0 OR BSD-2-Clause)
/* cilium-rs datapath: socket-level load balancing on a cgroup v2 subtree.
 *
 * Services are translated when a socket connects (TCP, connected UDP) or sends (unconnected
 * UDP), before any packet exists; recvmsg and getpeername translate back, so the
 * application only ever sees the service address. Backends are chosen by slot, never
 * Maglev (as Cilium): a random slot for TCP, the socket cookie's for UDP.
 */
#include "lib/config.h"
#include "lib/common.h"
#include "lib/maps.h"

#define SYS_REJECT 0
#define SYS_PROCEED 1

static __always_inline struct lb4_service *sock_lookup(__be32 addr, __be16 port, __u8 proto)
{
	struct lb4_key key = {};

	key.address = addr;
	key.dport = port;
	key.proto = proto;
	return bpf_map_lookup_elem(&cilium_lb4_services_v2, &key);
}

/* Translates ctx's destination if it is a service frontend. Returns 0 on success (or when
 * it is not a service), -1 when the service has no backend. */
static __always_inline int sock4_xlate_fwd(struct bpf_sock_addr *ctx, __u8 proto)
{
	struct lb4_reverse_sk_key rkey = {};
	struct lb4_reverse_sk rval = {};
	struct lb4_key key = {};
	struct lb4_service *svc, *slot;
	struct lb4_backend *be;
	__be32 addr = ctx->user_ip4;
	__be16 port = (__be16)ctx->user_port;
	__u64 cookie = bpf_get_socket_cookie(ctx);
	__u32 backend_id, pick;

	svc = sock_lookup(addr, port, proto);
	if (!svc)
		return 0;
	if (svc->count == 0)
		return -1;
	pick = proto == IPPROTO_TCP ? bpf_get_prandom_u32() : (__u32)cookie;
	key.address = addr;
	key.dport = port;
	key.proto = proto;
	key.backend_slot = (pick % svc->count) + 1;
	slot = bpf_map_lookup_elem(&cilium_lb4_services_v2, &key);
	if (!slot)
		return -1;
	backend_id = slot->backend_id;
	be = bpf_map_lookup_elem(&cilium_lb4_backends_v3, &backend_id);
	if (!be)
		return -1;
	rkey.cookie = cookie;
	rkey.address = be->address;
	rkey.port = be->port;
	rval.address = addr;
	rval.port = port;
	rval.rev_nat_index = svc->rev_nat_index;
	bpf_map_update_elem(&cilium_lb4_reverse_sk, &rkey, &rval, BPF_ANY);
	ctx->user_ip4 = be->address;
	ctx->user_port = be->port;
	return 0;
}

/* Puts the frontend back where the application reads the peer address. */
static __always_inline void sock4_xlate_rev(struct bpf_sock_addr *ctx)
{
	struct lb4_reverse_sk_key rkey = {};
	struct lb4_reverse_sk *rval;

	rkey.cookie = bpf_get_socket_cookie(ctx);
	rkey.address = ctx->user_ip4;
	rkey.port = (__be16)ctx->user_port;
	rval = bpf_map_lookup_elem(&cilium_lb4_reverse_sk, &rkey);
	if (!rval)
		return;
	ctx->user_ip4 = rval->address;
	ctx->user_port = rval->port;
}

static __always_inline __u8 sock_proto(struct bpf_sock_addr *ctx)
{
	return ctx->type == 1 /* SOCK_STREAM */ ? IPPROTO_TCP : IPPROTO_UDP;
}

SEC("cgroup/connect4")
int sock4_connect(struct bpf_sock_addr *ctx)
{
	if (sock4_xlate_fwd(ctx, sock_proto(ctx)) < 0)
		return SYS_REJECT;
	return SYS_PROCEED;
}

SEC("cgroup/sendmsg4")
int sock4_sendmsg(struct bpf_sock_addr *ctx)
{
	if (sock4_xlate_fwd(ctx, IPPROTO_UDP) < 0)
		return SYS_REJECT;
	return SYS_PROCEED;
}

SEC("cgroup/recvmsg4")
int sock4_recvmsg(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}

SEC("cgroup/getpeername4")
int sock4_getpeername(struct bpf_sock_addr *ctx)
{
	sock4_xlate_rev(ctx);
	return SYS_PROCEED;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
