package main

import missing "github.com/pocket-runner/no-such-module"

func main() { missing.Run() }
