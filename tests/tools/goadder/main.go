// goadder reads {"a": int, "b": int} on stdin and prints {"sum": a+b, "go": version} on stdout.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime"
)

type request struct {
	A int `json:"a"`
	B int `json:"b"`
}

type response struct {
	Sum int    `json:"sum"`
	Go  string `json:"go"`
}

func main() {
	var req request
	if err := json.NewDecoder(os.Stdin).Decode(&req); err != nil {
		fmt.Fprintln(os.Stderr, "bad body:", err)
		os.Exit(2)
	}
	if err := json.NewEncoder(os.Stdout).Encode(response{Sum: req.A + req.B, Go: runtime.Version()}); err != nil {
		os.Exit(1)
	}
}
