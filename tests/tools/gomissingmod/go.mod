module gomissingmod

go 1.23.2

require github.com/pocket-runner/no-such-module v1.0.0
