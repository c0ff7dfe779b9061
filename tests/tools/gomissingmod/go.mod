module gomissingmod

go 1.19

require github.com/pocket-runner/no-such-module v1.0.0
