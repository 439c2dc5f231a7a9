package e2e

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
)

// interopCases are grpc-go's interoperability test cases that need no
// cloud credentials, by their names in the interop client.
var interopCases = map[string]func(context.Context, *grpc.ClientConn){
	"empty_unary": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoEmptyUnaryCall(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"large_unary": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoLargeUnaryCall(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"client_streaming": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoClientStreaming(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"server_streaming": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoServerStreaming(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"ping_pong": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoPingPong(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"empty_stream": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoEmptyStream(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"timeout_on_sleeping_server": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoTimeoutOnSleepingServer(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"cancel_after_begin": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCancelAfterBegin(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"cancel_after_first_response": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCancelAfterFirstResponse(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"status_code_and_message": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoStatusCodeAndMessage(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"special_status_message": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoSpecialStatusMessage(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"custom_metadata": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoCustomMetadata(ctx, testgrpc.NewTestServiceClient(cc))
	},
	"unimplemented_method": func(ctx context.Context, cc *grpc.ClientConn) { interop.DoUnimplementedMethod(ctx, cc) },
	"unimplemented_service": func(ctx context.Context, cc *grpc.ClientConn) {
		interop.DoUnimplementedService(ctx, testgrpc.NewUnimplementedServiceClient(cc))
	},
}

// helperInterop runs one interop case against addr, naming authority in
// :authority. The interop package ends the process on a failed check, so
// each case runs in a process of its own.
func helperInterop(name, addr, authority string) error {
	run, ok := interopCases[name]
	if !ok {
		return fmt.Errorf("unknown interop case %q", name)
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority(authority))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run(ctx, cc)
	return nil
}

// TestGRPCInteropCasesPassThroughTwoProxiesWithMTLS runs grpc-go's
// interoperability cases against its interop server, direct and through
// a client and a server proxy with mTLS between them: every case that
// passes direct must pass through the mesh.
func TestGRPCInteropCasesPassThroughTwoProxiesWithMTLS(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(srv, interop.NewTestServer())
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	app := ln.Addr().String()

	mi := startIdentity(t, "24h")
	server := startProxy(t, proxyOpts{discovery: "services: []\n", args: append(mi.proxyArgs(t, "server"), "--inbound-forward", app)})
	client := startProxy(t, proxyOpts{discovery: discoveryFile(meshedService("interop", 50051, "", spiffe("server"), server.inbound)),
		args: mi.proxyArgs(t, "client")})

	run := func(name, addr, authority string) (bool, string) {
		args := helper(t, "interop", name, addr, authority)
		ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
		return err == nil, strings.TrimSpace(string(out))
	}
	var passed []string
	for name := range interopCases {
		direct, dout := run(name, app, app)
		if !direct {
			t.Logf("%s fails direct, so it is not asked of the mesh: %s", name, lastLine(dout))
			continue
		}
		if ok, out := run(name, client.outbound, "interop:50051"); !ok {
			t.Errorf("%s passes direct but fails through two proxies with mTLS:\n%s", name, out)
			continue
		}
		passed = append(passed, name)
	}
	t.Logf("%d of %d interop cases pass through the mesh: %s", len(passed), len(interopCases), strings.Join(passed, ", "))
	if len(passed) < len(interopCases)-1 {
		t.Errorf("only %d of %d interop cases pass direct and through the mesh", len(passed), len(interopCases))
	}
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
