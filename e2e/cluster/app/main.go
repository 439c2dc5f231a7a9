// Command app is the small application the cluster tests mesh: a server
// that answers plain HTTP and gRPC, and a client that calls it at a steady
// rate and reports what it got. Neither knows about the mesh.
//
//	app server [-http :8080] [-grpc :9090]
//	app client -http URL -grpc HOST:PORT [-n 200] [-rate 50]
//	app set-delay 200ms   # run in a server's container: answer that slowly
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// delayFile holds how slowly the server answers; set-delay writes it.
const delayFile = "/tmp/delay"

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: app server|client|set-delay ...")
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "server":
		err = server(os.Args[2:])
	case "client":
		err = client(os.Args[2:])
	case "set-delay":
		if len(os.Args) != 3 {
			err = errors.New("usage: app set-delay DURATION")
		} else if _, err = time.ParseDuration(os.Args[2]); err == nil {
			err = os.WriteFile(delayFile, []byte(os.Args[2]), 0o644)
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(1)
	}
}

func delay() time.Duration {
	b, err := os.ReadFile(delayFile)
	if err != nil {
		return 0
	}
	d, _ := time.ParseDuration(strings.TrimSpace(string(b)))
	return d
}

func server(args []string) error {
	fs := flag.NewFlagSet("server", flag.ExitOnError)
	httpAddr := fs.String("http", ":8080", "HTTP listen address")
	grpcAddr := fs.String("grpc", ":9090", "gRPC listen address")
	drain := fs.Duration("drain", 3*time.Second, "how long to keep serving after SIGTERM, while the pod leaves the endpoints")
	fs.Parse(args)
	host, _ := os.Hostname()

	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(delay())
		io.WriteString(w, host+"\n")
	})
	hs := &http.Server{Addr: *httpAddr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	hl, err := net.Listen("tcp", *httpAddr)
	if err != nil {
		return err
	}
	gl, err := net.Listen("tcp", *grpcAddr)
	if err != nil {
		return err
	}
	gs := grpc.NewServer()
	healthpb.RegisterHealthServer(gs, health.NewServer())
	go hs.Serve(hl)
	go gs.Serve(gl)
	fmt.Printf("serving HTTP on %s and gRPC on %s as %s\n", *httpAddr, *grpcAddr, host)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	fmt.Printf("stopping: serving %s more while the endpoints forget this pod\n", *drain)
	time.Sleep(*drain)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	gs.GracefulStop()
	return hs.Shutdown(ctx)
}

// Result is what the client prints, as one line of JSON after "RESULT ".
type Result struct {
	HTTPOK     int            `json:"http_ok"`
	HTTPFailed int            `json:"http_failed"`
	GRPCOK     int            `json:"grpc_ok"`
	GRPCFailed int            `json:"grpc_failed"`
	Servers    map[string]int `json:"servers"`
	Failures   []string       `json:"failures,omitempty"`
}

func client(args []string) error {
	fs := flag.NewFlagSet("client", flag.ExitOnError)
	url := fs.String("http", "", "URL to GET")
	grpcAddr := fs.String("grpc", "", "gRPC server to health-check, HOST:PORT")
	n := fs.Int("n", 200, "HTTP calls to make; every tenth also makes a gRPC call")
	rate := fs.Float64("rate", 50, "HTTP calls per second")
	timeout := fs.Duration("timeout", 5*time.Second, "each call's timeout")
	fs.Parse(args)
	if *url == "" || *grpcAddr == "" || *n <= 0 || *rate <= 0 {
		return errors.New("client needs -http URL, -grpc HOST:PORT, and positive -n and -rate")
	}
	hc := &http.Client{Timeout: *timeout}
	conn, err := grpc.NewClient("dns:///"+*grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	hh := healthpb.NewHealthClient(conn)

	res := Result{Servers: map[string]int{}}
	fail := func(format string, a ...any) {
		if len(res.Failures) < 10 {
			res.Failures = append(res.Failures, time.Now().Format("15:04:05.000 ")+fmt.Sprintf(format, a...))
		}
	}
	tick := time.NewTicker(time.Duration(float64(time.Second) / *rate))
	defer tick.Stop()
	for i := 0; i < *n; i++ {
		<-tick.C
		if body, err := get(hc, *url); err != nil {
			res.HTTPFailed++
			fail("GET %s: %v", *url, err)
		} else {
			res.HTTPOK++
			res.Servers[body]++
		}
		if i%10 == 0 {
			ctx, cancel := context.WithTimeout(context.Background(), *timeout)
			r, err := hh.Check(ctx, &healthpb.HealthCheckRequest{})
			cancel()
			if err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
				res.GRPCFailed++
				fail("gRPC health %s: %v %v", *grpcAddr, r, err)
			} else {
				res.GRPCOK++
			}
		}
	}
	b, _ := json.Marshal(res)
	fmt.Printf("RESULT %s\n", b)
	if res.HTTPFailed+res.GRPCFailed > 0 {
		return fmt.Errorf("%d HTTP and %d gRPC calls failed", res.HTTPFailed, res.GRPCFailed)
	}
	return nil
}

func get(hc *http.Client, url string) (string, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d: %s", resp.StatusCode, strings.TrimSpace(string(b)))
	}
	return strings.TrimSpace(string(b)), nil
}
