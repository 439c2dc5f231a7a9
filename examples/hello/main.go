// Command hello is a tiny HTTP backend for examples and demos: it answers
// every request with its name.
package main

import (
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8081", "address to listen on")
	name := flag.String("name", "hello", "name to answer with")
	flag.Parse()
	srv := &http.Server{
		Addr:              *addr,
		ReadHeaderTimeout: 10 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s answered %s %s\n", *name, r.Method, r.URL.Path)
		}),
	}
	log.Fatal(srv.ListenAndServe())
}
